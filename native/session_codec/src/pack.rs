//! A stored entry, `{Key, Session}`, packed into bytes, with the terms bytes cannot carry kept beside them as
//! *held parts*. `unpack` makes the entry again; `docs/design.md` says why this representation, and what it
//! costs against ETS.
//!
//! An entry's bytes are four sections, in this order:
//! - the key's canonical bytes (`key`), which the store compares keys with;
//! - the secret section: the bytes of every binary of up to `SECRET_BINARY_MAX` bytes (a master secret, session
//!   ids), the one part of an entry wiped when it is dropped;
//! - the code: a tag byte per term, the session's terms first and the key's after them (a lookup reads the
//!   first, a fold both). Atoms are their VM handles; integers are varints, those of 0 to 127 and tuples of up
//!   to 15 elements one byte, integers just above the smallest small integer (monotonic time stamps) counted from
//!   there, a repeated one a reference to its first; Latin-1 strings are their bytes; a binary equal to a binary
//!   key is the `KEY` tag alone;
//! - the blob section: the bytes of binaries of 65 bytes to `INLINE_BINARY_MAX` (a peer certificate), which a copy
//!   hands out by reference, as ETS hands out a shared binary, and never reads.
//!
//! What bytes cannot express (bignums, pids, references, funs, maps, bitstrings) and larger binaries are held
//! parts, numbered in the order their `PART` tags appear. A session's large fields (its listener's certificate
//! chain and private key) are held *shared*: every session of a listener carries the same ones, and the store
//! keeps one copy of each. Who keeps parts, and how, is the caller's ([`Keeper`]); this module decides which.
//!
//! Work is counted in units of the budget a call may spend on a normal scheduler ([`SCHEDULER_BUDGET`]). Packing
//! stops before it would spend more, having changed nothing it cannot go on from: its [`Item`]s say what is left
//! to do, and the same [`Packer`] finishes the work with a larger budget, on a dirty scheduler. Nothing is
//! packed twice. A field tried inline and then shared is the exception, at most `SHARE_MIN_BYTES` of work.
//!
//! Nothing here implements Debug: a packer holds a master secret.

use smallvec::SmallVec;

use crate::term::{Other, Term, View};
use crate::{push_varint, reserve_wiped, wipe, zigzag};

/// The work a call may do on a normal scheduler, in units: a byte of structure (a tag, a varint), 16 bytes of
/// binary contents (copied with `memcpy`), a heap word of a held part, and `PART_UNITS` more for each part.
/// Measured on entries just within it, a call takes well under a millisecond (`make bench`, "Scheduler safety").
/// An OTP session costs a few hundred units.
pub const SCHEDULER_BUDGET: usize = 8 * 1024;
/// What a held part costs besides its words: an environment made, copied out of at each lookup and freed, about
/// a microsecond each however small the term.
pub const PART_UNITS: usize = 128;
/// Bytes of binary contents per unit.
pub const BYTES_PER_UNIT: usize = 16;
/// Binaries up to this size are copied into the entry; larger ones are held, and stay shared.
pub const INLINE_BINARY_MAX: usize = 4096;
/// Binaries up to this size go to the secret section.
pub const SECRET_BINARY_MAX: usize = 64;
/// A session field (an element of the session) that packs to this many bytes or more, or holds a part, is held
/// shared. A listener's EC private key packs to about 100 bytes; a session's own compound fields to a dozen.
pub const SHARE_MIN_BYTES: usize = 64;
/// Tuples and lists nested deeper than this are held, which bounds unpacking's recursion.
pub const MAX_PACK_DEPTH: usize = 32;
/// The depth of a session's fields within `{Key, Session}`.
const FIELD_DEPTH: u8 = 2;
/// Latin-1 strings up to this length pack as bytes.
const STRING_MAX: usize = 255;
/// What a list's failed string read costs: the VM reads up to `STRING_MAX` cells before it can fail, and does not
/// say how many it read. It writes one byte, the list's tag.
const FAILED_STRING_UNITS: usize = 1 + STRING_MAX / 4;
/// The most a field's inline trial spends. It writes fewer than `SHARE_MIN_BYTES` bytes, and no step spends more
/// than `FAILED_STRING_UNITS` a byte. A packing stopped during or just after a trial does that trial again when it
/// goes on, and nothing else twice.
pub const TRIAL_MAX_UNITS: usize = SHARE_MIN_BYTES * FAILED_STRING_UNITS;
/// `LOW` integers an entry remembers for `LOW_AGAIN`.
const LOWS_KEPT: usize = 4;
/// The smallest small integer on a 64-bit VM, -2^59. Monotonic time stamps and unique integers start about here:
/// counted from it they take 1 to 8 bytes instead of 9.
pub(crate) const LOW_BASE: i64 = -(1 << 59);
/// Integers in `LOW_BASE..LOW_BASE + LOW_SPAN` pack as `LOW`.
const LOW_SPAN: i64 = 1 << 58;

pub(crate) mod tag {
    pub const NIL: u8 = 0;
    pub const ATOM: u8 = 1;
    pub const INT: u8 = 2;
    pub const FLOAT: u8 = 3;
    /// A binary of up to `INLINE_BINARY_MAX` bytes: its length; its bytes are the next ones of the blob section.
    pub const BINARY: u8 = 4;
    /// A Latin-1 string: its length, then its bytes.
    pub const STRING: u8 = 5;
    pub const TUPLE: u8 = 6;
    /// Elements, then `END`, then the tail.
    pub const LIST: u8 = 7;
    pub const END: u8 = 8;
    /// A held part, by number.
    pub const PART: u8 = 9;
    /// A binary whose bytes are the next ones of the secret section.
    pub const SECRET: u8 = 10;
    /// A binary equal to the entry's key, when that is a binary (a server's session id).
    pub const KEY: u8 = 11;
    /// An integer counted from `LOW_BASE`.
    pub const LOW: u8 = 12;
    /// The entry's `LOW` integer of this number, in packing order.
    pub const LOW_AGAIN: u8 = 13;
    /// A tuple of arity `byte - SMALL_TUPLE`, below `SMALL_TUPLE_END`.
    pub const SMALL_TUPLE: u8 = 32;
    pub const SMALL_TUPLE_END: u8 = SMALL_TUPLE + 16;
    /// The integer `byte - SMALL_INT`, 0 to 127.
    pub const SMALL_INT: u8 = 128;
}

/// Why packing stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Going on would spend more than the budget. The packer and its items are as they were before the step that
    /// did not fit: `Packer::run` with a larger budget goes on from there.
    OverBudget,
    /// The session holds a store or a cursor of this library.
    HoldsStore,
    /// The VM had no memory.
    OutOfMemory,
}

/// What a walk of a term to be held finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measure {
    /// Heap words, as `erts_debug:flat_size/1` counts them, give or take a word for kinds only their external
    /// format sizes (funs, references, bignums).
    pub words: usize,
    /// It has a float, or a fun whose insides the walk does not see: an identical-looking term may differ from it
    /// in the sign of a zero.
    pub may_hold_float: bool,
}

/// Keeps held parts for the packer: the NIF copies each into an environment of its own.
pub trait Keeper<'a, T: Term<'a>> {
    type Part;

    /// A part for this entry alone.
    fn hold(&mut self, term: T, measure: &Measure) -> Result<Self::Part, Stop>;

    /// The shared copy of session field `term`, element `position` of its session, made if there is none.
    fn share(&mut self, term: T, position: usize, measure: &Measure) -> Result<Self::Part, Stop>;

    /// The copy last shared at `position`, if it has at most `limit` words, compared with `term`.
    fn recent(&mut self, term: T, position: usize, limit: usize) -> Recent<Self::Part>;

    /// Whether a reference is a store or a cursor of this library: a session that held one would keep it alive
    /// for good.
    fn ours(&self, reference: T) -> bool;
}

/// What the copy last shared at a position says of a field.
pub enum Recent<P> {
    /// There is none, or it has more words than allowed: nothing was compared.
    None,
    /// It is identical to the field: the part, and its words.
    Same(P, usize),
    /// It differs; the comparison read at most this many words.
    Differs(usize),
}

/// Work left to do, innermost last. Its three kinds carry only terms and small numbers, so that a caller can
/// hand them to another scheduler and back (`Item::parts`, `Item::from_parts`).
pub enum Item<'a, T: Term<'a>> {
    /// Pack `term`, element `position` of its parent, at `depth`.
    Term { term: T, depth: u8, position: u32 },
    /// Pack a tuple's elements from element `next` on.
    Elements {
        tuple: T,
        elements: T::Elements,
        next: u32,
        depth: u8,
    },
    /// Pack a list from `cell` on, element `position` of it.
    Cells { cell: T, position: u32, depth: u8 },
}

/// The items of a packing: a packer never has more open than its depth.
pub type Items<'a, T> = SmallVec<[Item<'a, T>; 12]>;

impl<'a, T: Term<'a>> Item<'a, T> {
    /// The work of packing `{key, session}`.
    pub fn pair(key: T, session: T) -> Items<'a, T> {
        let mut items = Items::new();
        items.push(Item::Term {
            term: key,
            depth: 1,
            position: 0,
        });
        items.push(Item::Term {
            term: session,
            depth: 1,
            position: 1,
        });
        items
    }

    /// The item as plain parts: its kind (0, 1, 2), its term, a number (position or next element) and its depth.
    pub fn parts(&self) -> (u8, T, u32, u8) {
        match *self {
            Item::Term {
                term,
                depth,
                position,
            } => (0, term, position, depth),
            Item::Elements {
                tuple, next, depth, ..
            } => (1, tuple, next, depth),
            Item::Cells {
                cell,
                position,
                depth,
            } => (2, cell, position, depth),
        }
    }

    /// The item but for its term: its kind, number and depth, and for a tuple's elements the tuple's arity. A
    /// packing handed to another scheduler checks that its items come back in the shape they left in.
    pub fn shape(&self) -> (u8, u32, u8, usize) {
        let (kind, _, number, depth) = self.parts();
        let arity = match self {
            Item::Elements { elements, next, .. } => *next as usize + elements.len(),
            _ => 0,
        };
        (kind, number, depth, arity)
    }

    /// The item `parts` gave, or `None` for parts it cannot have given.
    pub fn from_parts(kind: u8, term: T, number: u32, depth: u8) -> Option<Self> {
        if usize::from(depth) > MAX_PACK_DEPTH + 1 {
            return None;
        }
        Some(match kind {
            0 => Item::Term {
                term,
                depth,
                position: number,
            },
            1 => {
                let View::Tuple(mut elements) = term.view() else {
                    return None;
                };
                if number > 0 {
                    elements.nth(number as usize - 1)?;
                }
                Item::Elements {
                    tuple: term,
                    elements,
                    next: number,
                    depth,
                }
            }
            2 => Item::Cells {
                cell: term,
                position: number,
                depth,
            },
            _ => return None,
        })
    }
}

/// The packing of one entry: the sections made so far, its parts, and what it has cost.
pub struct Packer<P> {
    pub secrets: Vec<u8>,
    pub code: Vec<u8>,
    pub blobs: Vec<u8>,
    pub parts: Vec<P>,
    /// Where a Latin-1 string is read, reused.
    string: [u8; STRING_MAX + 1],
    /// Units spent, on this call and any before it for the same entry.
    spent: usize,
    /// The units of the held parts: what copying them out, and freeing them, costs.
    part_units: usize,
    lows: Lows,
}

/// How far every section had got.
#[derive(Clone, Copy)]
struct Marks {
    secrets: usize,
    code: usize,
    blobs: usize,
    lows: Lows,
}

/// Why a step halted: a stop, or, inside a field tried inline, the sign to share that field instead.
enum Halt {
    Stop(Stop),
    Share,
}

impl From<Stop> for Halt {
    fn from(stop: Stop) -> Self {
        Halt::Stop(stop)
    }
}

impl<P> Default for Packer<P> {
    fn default() -> Self {
        Packer {
            secrets: Vec::new(),
            code: Vec::new(),
            blobs: Vec::new(),
            parts: Vec::new(),
            string: [0; STRING_MAX + 1],
            spent: 0,
            part_units: 0,
            lows: Lows::default(),
        }
    }
}

impl<P> Drop for Packer<P> {
    fn drop(&mut self) {
        wipe(&mut self.secrets);
    }
}

impl<P> Packer<P> {
    /// Packs what `items` hold, spending at most `budget` units in all (`usize::MAX`: no limit). `key_binary` is
    /// the key when it is a binary. On `Stop::OverBudget` the packer and `items` can go on with a larger budget;
    /// on any other stop they are to be dropped.
    pub fn run<'a, T: Term<'a>, K: Keeper<'a, T, Part = P>>(
        &mut self,
        items: &mut Items<'a, T>,
        keeper: &mut K,
        key_binary: Option<&[u8]>,
        budget: usize,
    ) -> Result<(), Stop> {
        let mut run = Run {
            packer: self,
            keeper,
            key_binary,
            budget,
            probe: None,
        };
        while let Some(item) = items.pop() {
            match run.item(item, items) {
                Ok(()) => {}
                Err(Halt::Stop(stop)) => return Err(stop),
                // Only a field tried inline is told to share, and that runs on items of its own (`Run::field`): this
                // cannot happen, and is refused rather than panicking.
                Err(Halt::Share) => return Err(Stop::OutOfMemory),
            }
        }
        Ok(())
    }

    /// Units spent so far on this entry.
    pub fn spent(&self) -> usize {
        self.spent
    }

    /// What copying the entry out costs, in units (`copy_cost`).
    pub fn cost(&self) -> usize {
        copy_cost(
            self.code.len(),
            self.secrets.len(),
            self.blobs.len(),
            self.part_units,
        )
    }

    /// The units of the held parts alone: what freeing them costs.
    pub fn part_units(&self) -> usize {
        self.part_units
    }

    /// Makes the packer ready for another entry, keeping its buffers: the secrets are wiped first.
    pub fn reset(&mut self) {
        wipe(&mut self.secrets);
        self.secrets.clear();
        self.code.clear();
        self.blobs.clear();
        self.parts.clear();
        self.spent = 0;
        self.part_units = 0;
        self.lows = Lows::default();
    }

    fn marks(&self) -> Marks {
        Marks {
            secrets: self.secrets.len(),
            code: self.code.len(),
            blobs: self.blobs.len(),
            lows: self.lows,
        }
    }

    /// Takes back what was packed since `marks`.
    fn rollback(&mut self, marks: Marks) {
        wipe(&mut self.secrets[marks.secrets..]);
        self.secrets.truncate(marks.secrets);
        self.code.truncate(marks.code);
        self.blobs.truncate(marks.blobs);
        self.lows = marks.lows;
    }
}

/// One call's packing: the packer, its keeper and its budget.
struct Run<'r, P, K> {
    packer: &'r mut Packer<P>,
    keeper: &'r mut K,
    key_binary: Option<&'r [u8]>,
    budget: usize,
    /// While a session field is tried inline: where it started.
    probe: Option<Marks>,
}

impl<'a, 'r, P, K> Run<'r, P, K> {
    fn left(&self) -> usize {
        self.budget.saturating_sub(self.packer.spent)
    }

    /// The words a part may have and still fit: without a budget, any (a fun is then measured too).
    fn part_limit(&self) -> usize {
        match self.budget {
            usize::MAX => usize::MAX,
            _ => self.left().saturating_sub(PART_COST),
        }
    }

    /// Spends `units` for a step that writes `bytes`: stops before anything is written if the units do not fit
    /// the budget or, inside a field tried inline, if the field would reach `SHARE_MIN_BYTES`.
    fn spend(&mut self, units: usize, bytes: usize) -> Result<(), Halt> {
        // The field's size first: a step that would make it shared is never done inline, whatever it costs.
        if let Some(start) = self.probe {
            let p = &self.packer;
            if p.code.len() - start.code + p.secrets.len() - start.secrets + bytes
                >= SHARE_MIN_BYTES
            {
                return Err(Halt::Share);
            }
        }
        if units > self.left() {
            return Err(Stop::OverBudget.into());
        }
        self.packer.spent += units;
        Ok(())
    }

    /// Spends what a step of `bytes` of structure costs.
    fn structure(&mut self, bytes: usize) -> Result<(), Halt> {
        self.spend(bytes, bytes)
    }

    fn push(&mut self, byte: u8) {
        self.packer.code.push(byte);
    }

    fn varint(&mut self, value: u64) {
        push_varint(&mut self.packer.code, value);
    }

    /// Does one item: the scalars of a tuple or a list in a loop, and for a compound element, pushes what is left
    /// of this item and then the element's own. A step that stops for the budget has written nothing, and what is
    /// left of the item is back on `items`.
    fn item<T: Term<'a>>(&mut self, item: Item<'a, T>, items: &mut Items<'a, T>) -> Result<(), Halt>
    where
        K: Keeper<'a, T, Part = P>,
    {
        match item {
            Item::Term {
                term,
                depth,
                position,
            } => match self.term(term, depth, position) {
                Ok(Some(inner)) => items.push(inner),
                Ok(None) => {}
                Err(halt) => return Err(self.put_back(halt, items, item)),
            },
            Item::Elements {
                tuple,
                mut elements,
                mut next,
                depth,
            } => loop {
                let Some(element) = elements.next() else {
                    return Ok(());
                };
                match self.term(element, depth + 1, next) {
                    Ok(None) => next += 1,
                    Ok(Some(inner)) => {
                        items.push(Item::Elements {
                            tuple,
                            elements,
                            next: next + 1,
                            depth,
                        });
                        items.push(inner);
                        return Ok(());
                    }
                    // Back to the element that did not fit: the rare path, which looks at the tuple again.
                    Err(halt) => match Item::from_parts(1, tuple, next, depth) {
                        Some(rest) => return Err(self.put_back(halt, items, rest)),
                        None => return Err(halt),
                    },
                }
            },
            Item::Cells {
                mut cell,
                mut position,
                depth,
            } => loop {
                let halt = match cell.view() {
                    View::Cons(head, tail) => match self.term(head, depth + 1, position) {
                        Ok(None) => {
                            (cell, position) = (tail, position + 1);
                            continue;
                        }
                        Ok(Some(inner)) => {
                            items.push(Item::Cells {
                                cell: tail,
                                position: position + 1,
                                depth,
                            });
                            items.push(inner);
                            return Ok(());
                        }
                        Err(halt) => halt,
                    },
                    View::Nil => match self.structure(2) {
                        Ok(()) => {
                            self.push(tag::END);
                            self.push(tag::NIL);
                            return Ok(());
                        }
                        Err(halt) => halt,
                    },
                    // An improper tail, packed as an item of its own.
                    _ => match self.structure(1) {
                        Ok(()) => {
                            self.push(tag::END);
                            items.push(Item::Term {
                                term: cell,
                                depth: depth + 1,
                                position,
                            });
                            return Ok(());
                        }
                        Err(halt) => halt,
                    },
                };
                return Err(self.put_back(
                    halt,
                    items,
                    Item::Cells {
                        cell,
                        position,
                        depth,
                    },
                ));
            },
        }
        Ok(())
    }

    /// On a stop for the budget, `item` goes back on `items`, to be done with a larger one.
    fn put_back<T: Term<'a>>(
        &mut self,
        halt: Halt,
        items: &mut Items<'a, T>,
        item: Item<'a, T>,
    ) -> Halt {
        if matches!(halt, Halt::Stop(Stop::OverBudget)) {
            items.push(item);
        }
        halt
    }

    /// Packs `term`, element `position` of its parent at `depth`, if it is a scalar, a field or a part; for a
    /// tuple or list to walk, writes its tag and returns the item that walks it. Inlined into `item`'s loops, so
    /// that a scalar element costs no call and no returned item; fields and parts are calls of their own.
    #[inline(always)]
    fn term<T: Term<'a>>(
        &mut self,
        term: T,
        depth: u8,
        position: u32,
    ) -> Result<Option<Item<'a, T>>, Halt>
    where
        K: Keeper<'a, T, Part = P>,
    {
        let view = term.view();
        if matches!(view, View::Tuple(_) | View::Cons(..))
            && depth == FIELD_DEPTH
            && self.probe.is_none()
        {
            return self.field(term, position).map(|()| None);
        }
        match view {
            View::Atom(handle) => {
                self.structure(1 + varint_len(handle))?;
                self.push(tag::ATOM);
                self.varint(handle);
            }
            View::Integer(value) => self.integer(value)?,
            View::Float(value) => {
                self.structure(9)?;
                self.push(tag::FLOAT);
                self.packer.code.extend_from_slice(&value.to_le_bytes());
            }
            View::Nil => {
                self.structure(1)?;
                self.push(tag::NIL);
            }
            View::Binary(bytes) => self.binary(term, bytes)?,
            View::Tuple(elements) if usize::from(depth) < MAX_PACK_DEPTH => {
                let arity = elements.len();
                match u8::try_from(arity) {
                    Ok(small) if small < tag::SMALL_TUPLE_END - tag::SMALL_TUPLE => {
                        self.structure(1)?;
                        self.push(tag::SMALL_TUPLE + small);
                    }
                    _ => {
                        self.structure(1 + varint_len(arity as u64))?;
                        self.push(tag::TUPLE);
                        self.varint(arity as u64);
                    }
                }
                return Ok(Some(Item::Elements {
                    tuple: term,
                    elements,
                    next: 0,
                    depth,
                }));
            }
            View::Cons(head, _) if usize::from(depth) < MAX_PACK_DEPTH => {
                // A list that starts with a byte may be a Latin-1 string, read in one call.
                let byte = matches!(head.view(), View::Integer(0..=255));
                match byte.then(|| term.latin1(&mut self.packer.string)).flatten() {
                    Some(len) => {
                        let bytes = 1 + varint_len(len as u64) + len;
                        self.spend(bytes, bytes)?;
                        self.push(tag::STRING);
                        self.varint(len as u64);
                        let Packer { code, string, .. } = &mut *self.packer;
                        code.extend_from_slice(&string[..len]);
                    }
                    None => {
                        // A failed read may have read every cell of the buffer.
                        self.spend(if byte { FAILED_STRING_UNITS } else { 1 }, 1)?;
                        self.push(tag::LIST);
                        return Ok(Some(Item::Cells {
                            cell: term,
                            position: 0,
                            depth,
                        }));
                    }
                }
            }
            _ => self.hold(term)?,
        }
        Ok(None)
    }

    fn integer(&mut self, value: i64) -> Result<(), Halt> {
        if let Ok(small @ 0..=127) = u8::try_from(value) {
            self.structure(1)?;
            self.push(tag::SMALL_INT + small);
        } else if (LOW_BASE..LOW_BASE + LOW_SPAN).contains(&value) {
            match self.packer.lows.position(value) {
                Some(index) => {
                    self.structure(1 + varint_len(index as u64))?;
                    self.push(tag::LOW_AGAIN);
                    self.varint(index as u64);
                }
                None => {
                    let counted = (value - LOW_BASE) as u64;
                    self.structure(1 + varint_len(counted))?;
                    self.packer.lows.push(value);
                    self.push(tag::LOW);
                    self.varint(counted);
                }
            }
        } else {
            let zigzagged = zigzag(value);
            self.structure(1 + varint_len(zigzagged))?;
            self.push(tag::INT);
            self.varint(zigzagged);
        }
        Ok(())
    }

    fn binary<T: Term<'a>>(&mut self, term: T, bytes: &[u8]) -> Result<(), Halt>
    where
        K: Keeper<'a, T, Part = P>,
    {
        let len = bytes.len();
        let header = 1 + varint_len(len as u64);
        if self.key_binary == Some(bytes) {
            self.structure(1)?;
            self.push(tag::KEY);
        } else if len <= SECRET_BINARY_MAX {
            self.spend(header + len.div_ceil(BYTES_PER_UNIT), header + len)?;
            self.push(tag::SECRET);
            self.varint(len as u64);
            reserve_wiped(&mut self.packer.secrets, len);
            self.packer.secrets.extend_from_slice(bytes);
        } else if len <= INLINE_BINARY_MAX {
            self.spend(header + len.div_ceil(BYTES_PER_UNIT), header + len)?;
            self.push(tag::BINARY);
            self.varint(len as u64);
            self.packer.blobs.extend_from_slice(bytes);
        } else {
            return self.hold(term);
        }
        Ok(())
    }

    /// A part for this entry alone; inside a field tried inline, the sign to share the field instead.
    #[inline(never)]
    fn hold<T: Term<'a>>(&mut self, term: T) -> Result<(), Halt>
    where
        K: Keeper<'a, T, Part = P>,
    {
        if self.probe.is_some() {
            return Err(Halt::Share);
        }
        let measure = measure(term, self.part_limit(), |reference| {
            self.keeper.ours(reference)
        })?;
        self.spend(measure.words + PART_COST, 0)?;
        let part = self.keeper.hold(term, &measure)?;
        self.put_part(part, measure.words);
        Ok(())
    }

    /// A session field: the copy last shared at its position if it is that; else packed inline if small and
    /// plain; else shared.
    #[inline(never)]
    fn field<T: Term<'a>>(&mut self, term: T, position: u32) -> Result<(), Halt>
    where
        K: Keeper<'a, T, Part = P>,
    {
        let at = position as usize;
        match self.keeper.recent(term, at, self.part_limit()) {
            Recent::Same(part, words) => {
                self.spend(words + PART_COST, 0)?;
                self.put_part(part, words);
                return Ok(());
            }
            Recent::Differs(words) => self.spend(words, 0)?,
            Recent::None => {}
        }
        let start = self.packer.marks();
        self.probe = Some(start);
        let mut items = Items::new();
        let mut trial = self
            .term(term, FIELD_DEPTH, position)
            .map(|inner| items.extend(inner));
        while let (Ok(()), Some(item)) = (&trial, items.pop()) {
            trial = self.item(item, &mut items);
        }
        self.probe = None;
        let small = self.packer.code.len() - start.code + self.packer.secrets.len() - start.secrets
            < SHARE_MIN_BYTES;
        match trial {
            Ok(()) if small => return Ok(()),
            Ok(()) | Err(Halt::Share) => self.packer.rollback(start),
            Err(halt) => {
                self.packer.rollback(start);
                return Err(halt);
            }
        }
        let measure = measure(term, self.part_limit(), |reference| {
            self.keeper.ours(reference)
        })?;
        self.spend(measure.words + PART_COST, 0)?;
        let part = self.keeper.share(term, at, &measure)?;
        self.put_part(part, measure.words);
        Ok(())
    }

    fn put_part(&mut self, part: P, words: usize) {
        let index = self.packer.parts.len();
        self.packer.parts.push(part);
        self.packer.part_units += words + PART_UNITS;
        self.push(tag::PART);
        self.varint(index as u64);
    }
}

/// What a part costs besides its words: `PART_UNITS`, and a `PART` tag and its number.
const PART_COST: usize = PART_UNITS + 3;

/// What copying an entry out costs, in units: a byte of code each (a tag, a varint, a string's byte), 16 bytes of
/// secrets or blobs each, and its parts' units (`PART_UNITS` and their words each).
pub fn copy_cost(code: usize, secrets: usize, blobs: usize, part_units: usize) -> usize {
    code + (secrets + blobs) / BYTES_PER_UNIT + part_units
}

/// The bytes of `value` as a varint.
fn varint_len(value: u64) -> usize {
    (64 - value.leading_zeros() as usize).div_ceil(7).max(1)
}

/// Walks `term`, a whole term to be held, with a stack of its own (it may be nested arbitrarily deep), and gives
/// up with `OverBudget` as soon as it has found more than `limit` words: it costs O(min(size, limit)). A map's size
/// is known without a walk, so one over the limit is refused before any of its entries is visited. A fun, whose
/// captured terms only its external format shows, whole, is measured only when there is no limit.
pub fn measure<'a, T: Term<'a>>(
    term: T,
    limit: usize,
    ours: impl Fn(T) -> bool,
) -> Result<Measure, Stop> {
    const WORD: usize = 8;
    let mut measure = Measure {
        words: 0,
        may_hold_float: false,
    };
    let mut todo = vec![term];
    let external_words = |term: T| {
        term.external(|bytes| 1 + bytes.len().div_ceil(WORD))
            .ok_or(Stop::OutOfMemory)
    };
    while let Some(term) = todo.pop() {
        measure.words += match term.view() {
            View::Atom(_) | View::Nil | View::Other(Other::Pid | Other::Port) => 0,
            View::Integer(value) if (LOW_BASE..-LOW_BASE).contains(&value) => 0,
            View::Integer(_) => 2,
            View::Float(_) => {
                measure.may_hold_float = true;
                2
            }
            // Heap binaries up to 64 bytes; a reference to a shared one beyond.
            View::Binary(bytes) if bytes.len() <= 64 => 2 + bytes.len().div_ceil(WORD),
            View::Binary(_) | View::Other(Other::Bitstring) => 6,
            View::Tuple(elements) => {
                let arity = elements.len();
                todo.extend(elements);
                1 + arity
            }
            View::Cons(head, tail) => {
                todo.push(head);
                todo.push(tail);
                2
            }
            // Up to 32 keys a header, the values and a tuple of keys; beyond, a tree of about as much again.
            View::Map(size) => {
                let words = if size <= 32 {
                    4 + 2 * size
                } else {
                    4 + 4 * size
                };
                if measure.words.saturating_add(words) > limit {
                    return Err(Stop::OverBudget);
                }
                term.map_entries(|key, value| todo.extend([key, value]));
                words
            }
            View::Other(Other::Reference) if ours(term) => return Err(Stop::HoldsStore),
            View::Other(Other::Fun) if limit < usize::MAX => return Err(Stop::OverBudget),
            View::Other(Other::Fun) => {
                measure.may_hold_float = true;
                external_words(term)?
            }
            View::Other(Other::BigInteger | Other::Reference) => external_words(term)?,
        };
        if measure.words > limit {
            return Err(Stop::OverBudget);
        }
    }
    Ok(measure)
}

/// The `LOW` integers packed or unpacked so far, in order, up to `LOWS_KEPT`.
#[derive(Clone, Copy, Default)]
pub(crate) struct Lows {
    values: [i64; LOWS_KEPT],
    len: usize,
}

impl Lows {
    fn position(&self, value: i64) -> Option<usize> {
        self.values[..self.len].iter().position(|&low| low == value)
    }

    pub(crate) fn push(&mut self, value: i64) {
        if self.len < LOWS_KEPT {
            self.values[self.len] = value;
            self.len += 1;
        }
    }

    pub(crate) fn get(&self, index: usize) -> Option<i64> {
        self.values[..self.len].get(index).copied()
    }
}
