//! Erlang terms as plain Rust values, seen and made through the codec's traits as the NIF sees and makes
//! rustler's terms, and a keeper of held parts with the store's sharing policy. Shared by the codec's tests.
#![allow(dead_code)]

use std::sync::Arc;

use proptest::prelude::*;
use session_codec::intern::Interner;
use session_codec::pack::{Item, Keeper, Measure, Packer, Recent, Stop};
use session_codec::term::{Build, Make, Other, Term, View};
use session_codec::unpack::{unpack, Sections};

/// A term. Lists are their heads and an improper tail (`None`: `[]`); a tail is never itself a list.
#[derive(Clone, Debug)]
pub enum Value {
    Atom(u64),
    Int(i64),
    /// A bignum, by its external format.
    Big(Vec<u8>),
    Float(f64),
    Bin(Vec<u8>),
    Bits(u8),
    Tuple(Vec<Value>),
    List(Vec<Value>, Option<Box<Value>>),
    Map(Vec<(Value, Value)>),
    Pid(u64),
    Ref(u64),
    Fun(u64),
    /// A store of this library.
    Ours,
}

/// `=:=`, as OTP 27 has it: floats by their bits, so 0.0 and -0.0 differ.
impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        use Value::*;
        match (self, other) {
            (Atom(a), Atom(b)) | (Pid(a), Pid(b)) | (Ref(a), Ref(b)) | (Fun(a), Fun(b)) => a == b,
            (Int(a), Int(b)) => a == b,
            (Big(a), Big(b)) | (Bin(a), Bin(b)) => a == b,
            (Float(a), Float(b)) => a.to_bits() == b.to_bits(),
            (Bits(a), Bits(b)) => a == b,
            (Tuple(a), Tuple(b)) => a == b,
            (List(a, x), List(b, y)) => a == b && x == y,
            (Map(a), Map(b)) => a == b,
            (Ours, Ours) => true,
            _ => false,
        }
    }
}

pub fn nil() -> Value {
    Value::List(Vec::new(), None)
}

pub fn string(text: &str) -> Value {
    Value::List(text.bytes().map(|b| Value::Int(b.into())).collect(), None)
}

/// A value as the codec sees it: a whole value, or what is left of a list.
#[derive(Clone, Copy)]
pub enum Seen<'a> {
    Whole(&'a Value),
    Cells(&'a [Value], Option<&'a Value>),
}

impl<'a> Seen<'a> {
    pub fn value(self) -> Value {
        match self {
            Seen::Whole(value) => value.clone(),
            Seen::Cells([], Some(tail)) => tail.clone(),
            Seen::Cells(heads, tail) => {
                Value::List(heads.to_vec(), tail.map(|t| Box::new(t.clone())))
            }
        }
    }
}

fn whole(value: &Value) -> Seen<'_> {
    Seen::Whole(value)
}

impl<'a> Term<'a> for Seen<'a> {
    type Elements = std::iter::Map<std::slice::Iter<'a, Value>, fn(&'a Value) -> Seen<'a>>;

    fn view(self) -> View<'a, Self> {
        match self {
            Seen::Whole(Value::List(heads, tail)) => Seen::Cells(heads, tail.as_deref()).view(),
            Seen::Whole(value) => match value {
                Value::Atom(handle) => View::Atom(*handle),
                Value::Int(value) => View::Integer(*value),
                Value::Big(_) => View::Other(Other::BigInteger),
                Value::Float(value) => View::Float(*value),
                Value::Bin(bytes) => View::Binary(bytes),
                Value::Bits(_) => View::Other(Other::Bitstring),
                Value::Tuple(elements) => {
                    View::Tuple(elements.iter().map(whole as fn(&'a Value) -> Seen<'a>))
                }
                Value::Map(pairs) => View::Map(pairs.len()),
                Value::Pid(_) => View::Other(Other::Pid),
                Value::Ref(_) => View::Other(Other::Reference),
                Value::Fun(_) => View::Other(Other::Fun),
                Value::Ours => View::Other(Other::Reference),
                Value::List(..) => View::Nil,
            },
            Seen::Cells([], None) => View::Nil,
            Seen::Cells([], Some(tail)) => Seen::Whole(tail).view(),
            Seen::Cells([head], Some(tail)) => View::Cons(Seen::Whole(head), Seen::Whole(tail)),
            Seen::Cells([head, rest @ ..], tail) => {
                View::Cons(Seen::Whole(head), Seen::Cells(rest, tail))
            }
        }
    }

    fn latin1(self, buf: &mut [u8]) -> Option<usize> {
        let heads: &[Value] = match self {
            Seen::Whole(Value::List(heads, None)) => heads,
            Seen::Cells(heads, None) => heads,
            _ => return None,
        };
        if heads.len() >= buf.len() {
            return None;
        }
        for (slot, head) in buf.iter_mut().zip(heads) {
            *slot = match head {
                Value::Int(byte @ 0..=255) => *byte as u8,
                _ => return None,
            };
        }
        Some(heads.len())
    }

    fn external<R>(self, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        match self {
            Seen::Whole(Value::Big(bytes)) => Some(f(bytes)),
            Seen::Whole(Value::Ref(n) | Value::Fun(n) | Value::Pid(n)) => Some(f(&n.to_le_bytes())),
            Seen::Whole(Value::Ours) => Some(f(&[0; 24])),
            _ => None,
        }
    }

    fn map_entries(self, mut f: impl FnMut(Self, Self)) {
        if let Seen::Whole(Value::Map(pairs)) = self {
            for (key, value) in pairs {
                f(Seen::Whole(key), Seen::Whole(value));
            }
        }
    }
}

/// A part kept by [`Parts`]: the value, and its words.
pub type Part = Arc<(Value, usize)>;

/// Keeps parts as the NIF does, with the store's sharing policy, and counts what it was asked.
#[derive(Default)]
pub struct Parts {
    pub interner: Interner<(Value, usize)>,
    pub held: usize,
    pub shared: usize,
    pub made: usize,
}

fn hash(value: &Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    format!("{value:?}").hash(&mut hasher);
    hasher.finish()
}

impl<'a> Keeper<'a, Seen<'a>> for Parts {
    type Part = Part;

    fn hold(&mut self, term: Seen<'a>, measure: &Measure) -> Result<Part, Stop> {
        self.held += 1;
        Ok(Arc::new((term.value(), measure.words)))
    }

    fn share(&mut self, term: Seen<'a>, position: usize, measure: &Measure) -> Result<Part, Stop> {
        self.shared += 1;
        let value = term.value();
        let hash = hash(&value);
        let part = match self.interner.find(hash, |(copy, _)| *copy == value) {
            Some(found) => found,
            None => {
                self.made += 1;
                let part = Arc::new((value, measure.words));
                self.interner.file(hash, &part);
                part
            }
        };
        self.interner.remember(position, &part);
        Ok(part)
    }

    fn ours(&self, reference: Seen<'a>) -> bool {
        matches!(reference, Seen::Whole(Value::Ours))
    }

    fn recent(&mut self, term: Seen<'a>, position: usize, limit: usize) -> Recent<Part> {
        match self.interner.recent(position) {
            Some(part) if part.1 <= limit => {
                if part.0 == term.value() {
                    let words = part.1;
                    Recent::Same(part, words)
                } else {
                    Recent::Differs(part.1)
                }
            }
            _ => Recent::None,
        }
    }
}

/// Makes values in an arena: a made term is its index.
pub struct Arena<'p> {
    pub made: Vec<Value>,
    pub parts: &'p [Part],
}

impl Build for Arena<'_> {
    type Term = usize;

    fn make(&mut self, what: Make<'_, usize>) -> Option<usize> {
        let value = match what {
            Make::Nil => nil(),
            Make::Atom(handle) => Value::Atom(handle),
            Make::Integer(value) => Value::Int(value),
            Make::Float(value) => Value::Float(value),
            Make::Binary(bytes) | Make::Blob(bytes) => Value::Bin(bytes.to_vec()),
            Make::String(bytes) => {
                Value::List(bytes.iter().map(|&b| Value::Int(b.into())).collect(), None)
            }
            Make::Tuple(elements) => {
                Value::Tuple(elements.iter().map(|&i| self.made[i].clone()).collect())
            }
            Make::List(heads, tail) => Value::List(
                heads.iter().map(|&i| self.made[i].clone()).collect(),
                tail.map(|i| Box::new(self.made[i].clone())),
            ),
            Make::Part(index) => self.parts.get(index)?.0.clone(),
        };
        self.made.push(value);
        Some(self.made.len() - 1)
    }
}

/// An entry packed whole: its key's bytes (a binary key's canonical encoding, else empty) and its packer.
pub struct Packed {
    pub key: Vec<u8>,
    pub packer: Packer<Part>,
}

/// The canonical bytes of a key, as the key encoder makes them (`[]` if it refuses the key).
pub fn key_bytes(key: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    match session_codec::key::encode_key(whole(key), &mut out) {
        Ok(_) => out,
        Err(_) => Vec::new(),
    }
}

/// Packs `{key, session}` with `budget` for the first call, and goes on without one if it stopped for it.
/// Returns the entry and, when it stopped, the units the first call spent.
pub fn pack(
    parts: &mut Parts,
    key: &Value,
    session: &Value,
    budget: usize,
) -> Result<(Packed, Option<usize>), Stop> {
    let key_bytes = key_bytes(key);
    let key_binary = session_codec::key::binary_of(&key_bytes);
    let mut packer = Packer::default();
    let mut items = Item::pair(whole(key), whole(session));
    let stopped = match packer.run(&mut items, parts, key_binary, budget) {
        Ok(()) => None,
        Err(Stop::OverBudget) => {
            let first = packer.spent();
            // Across schedulers, items travel as plain parts.
            let mut moved = session_codec::pack::Items::new();
            for item in items.iter() {
                let (kind, term, number, depth) = item.parts();
                moved.push(Item::from_parts(kind, term, number, depth).expect("parts of an item"));
            }
            packer.run(&mut moved, parts, key_binary, usize::MAX)?;
            Some(first)
        }
        Err(stop) => return Err(stop),
    };
    Ok((
        Packed {
            key: key_bytes,
            packer,
        },
        stopped,
    ))
}

/// The entry made again, with its key or not.
pub fn unpack_entry(packed: &Packed, with_key: bool) -> Option<Value> {
    let sections = Sections {
        key: &packed.key,
        secrets: &packed.packer.secrets,
        code: &packed.packer.code,
        blobs: &packed.packer.blobs,
    };
    let mut arena = Arena {
        made: Vec::new(),
        parts: &packed.packer.parts,
    };
    let made = unpack(sections, &mut arena, &mut Vec::new(), with_key)?;
    Some(arena.made[made].clone())
}

/// Any term this library could be handed, Ours excepted, nested up to `depth` levels.
pub fn any_value(depth: u32) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        (0u64..4000).prop_map(Value::Atom),
        any::<i64>().prop_map(Value::Int),
        (-130i64..300).prop_map(Value::Int),
        (0i64..1 << 40).prop_map(|n| Value::Int(-(1 << 59) + n)),
        proptest::collection::vec(any::<u8>(), 9..20).prop_map(Value::Big),
        any::<f64>().prop_map(Value::Float),
        Just(Value::Float(-0.0)),
        proptest::collection::vec(any::<u8>(), 0..100).prop_map(Value::Bin),
        proptest::collection::vec(any::<u8>(), 4090..4100).prop_map(Value::Bin),
        (1u8..8).prop_map(Value::Bits),
        any::<u64>().prop_map(Value::Pid),
        any::<u64>().prop_map(Value::Ref),
        any::<u64>().prop_map(Value::Fun),
        "[a-z.]{0,30}".prop_map(|s| string(&s)),
        Just(nil()),
    ];
    leaf.prop_recursive(depth, 256, 12, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..14).prop_map(Value::Tuple),
            (
                proptest::collection::vec(inner.clone(), 1..12),
                proptest::option::of(inner.clone())
            )
                .prop_map(|(heads, tail)| {
                    // A list's tail is never a list itself: that would be the same term spelled two ways.
                    let tail = tail.filter(|t| !matches!(t, Value::List(..))).map(Box::new);
                    Value::List(heads, tail)
                }),
            proptest::collection::vec((inner.clone(), inner), 0..5).prop_map(Value::Map),
        ]
    })
}

/// A key as OTP's stores have them: a 32-byte session id, or `{{Host, Port}, Id}`.
pub fn any_key() -> impl Strategy<Value = Value> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 32).prop_map(Value::Bin),
        (
            "[a-z.]{1,40}",
            1i64..65536,
            proptest::collection::vec(any::<u8>(), 32)
        )
            .prop_map(|(host, port, id)| {
                Value::Tuple(vec![
                    Value::Tuple(vec![string(&host), Value::Int(port)]),
                    Value::Bin(id),
                ])
            }),
    ]
}
