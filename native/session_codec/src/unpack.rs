//! An entry made again from what `pack` wrote, through [`Build`]. Its cost is known before it starts (the
//! entry's `cost`), so the caller decides beforehand where it may run.

use crate::key::binary_of;
use crate::pack::{tag, Lows, LOW_BASE};
use crate::term::{Build, Make};
use crate::{read_varint, unzigzag};

/// An entry's four sections.
#[derive(Clone, Copy)]
pub struct Sections<'e> {
    pub key: &'e [u8],
    pub secrets: &'e [u8],
    pub code: &'e [u8],
    pub blobs: &'e [u8],
}

/// The session, or with `with_key` the `{Key, Session}` pair, made with `builder`. `stack` is scratch space, for
/// the elements of tuples and lists being made, that a caller may keep between calls. `None` only on bytes `pack`
/// cannot have written, or when the builder has no memory.
pub fn unpack<B: Build>(
    sections: Sections<'_>,
    builder: &mut B,
    stack: &mut Vec<B::Term>,
    with_key: bool,
) -> Option<B::Term> {
    stack.clear();
    let mut unpacker = Unpacker {
        builder,
        sections,
        at: 0,
        secret_at: 0,
        blob_at: 0,
        stack,
        lows: Lows::default(),
    };
    let session = unpacker.term()?;
    if !with_key {
        return Some(session);
    }
    let key = unpacker.term()?;
    unpacker.builder.make(Make::Tuple(&[key, session]))
}

struct Unpacker<'u, 'e, B: Build> {
    builder: &'u mut B,
    sections: Sections<'e>,
    /// Where the next tag is in the code, the next secret in the secret section and the next blob in the blobs.
    at: usize,
    secret_at: usize,
    blob_at: usize,
    /// Elements of the tuples and lists being made, innermost last.
    stack: &'u mut Vec<B::Term>,
    lows: Lows,
}

impl<'e, B: Build> Unpacker<'_, 'e, B> {
    /// Makes the term at `at`. Recursion is as deep as the term's nesting, which `pack` bounded.
    fn term(&mut self) -> Option<B::Term> {
        let what = match self.byte()? {
            tag::NIL => Make::Nil,
            tag::ATOM => Make::Atom(self.varint()?),
            tag::INT => Make::Integer(unzigzag(self.varint()?)),
            tag::LOW => {
                let low = LOW_BASE.checked_add(i64::try_from(self.varint()?).ok()?)?;
                self.lows.push(low);
                Make::Integer(low)
            }
            tag::LOW_AGAIN => {
                let index = self.len()?;
                Make::Integer(self.lows.get(index)?)
            }
            small @ tag::SMALL_INT.. => Make::Integer(i64::from(small - tag::SMALL_INT)),
            tag::FLOAT => Make::Float(f64::from_le_bytes(self.take(8)?.try_into().ok()?)),
            tag::BINARY => {
                let len = self.len()?;
                let end = self.blob_at.checked_add(len)?;
                let bytes = self.sections.blobs.get(self.blob_at..end)?;
                self.blob_at = end;
                Make::Blob(bytes)
            }
            tag::STRING => {
                let len = self.len()?;
                Make::String(self.take(len)?)
            }
            tag::KEY => Make::Binary(binary_of(self.sections.key)?),
            tag::SECRET => {
                let len = self.len()?;
                let end = self.secret_at.checked_add(len)?;
                let bytes = self.sections.secrets.get(self.secret_at..end)?;
                self.secret_at = end;
                Make::Binary(bytes)
            }
            tag::PART => Make::Part(self.len()?),
            arity @ (tag::TUPLE | tag::SMALL_TUPLE..tag::SMALL_TUPLE_END) => {
                let arity = match arity {
                    tag::TUPLE => self.len()?,
                    small => usize::from(small - tag::SMALL_TUPLE),
                };
                let base = self.stack.len();
                for _ in 0..arity {
                    let element = self.term()?;
                    self.stack.push(element);
                }
                let tuple = self.builder.make(Make::Tuple(&self.stack[base..]));
                self.stack.truncate(base);
                return tuple;
            }
            tag::LIST => {
                let base = self.stack.len();
                while *self.sections.code.get(self.at)? != tag::END {
                    let element = self.term()?;
                    self.stack.push(element);
                }
                self.at += 1;
                let tail = match self.sections.code.get(self.at)? {
                    &tag::NIL => {
                        self.at += 1;
                        None
                    }
                    _ => Some(self.term()?),
                };
                let list = self.builder.make(Make::List(&self.stack[base..], tail));
                self.stack.truncate(base);
                return list;
            }
            _ => return None,
        };
        self.builder.make(what)
    }

    fn byte(&mut self) -> Option<u8> {
        let byte = *self.sections.code.get(self.at)?;
        self.at += 1;
        Some(byte)
    }

    fn take(&mut self, len: usize) -> Option<&'e [u8]> {
        let code = self.sections.code;
        let bytes = code.get(self.at..self.at.checked_add(len)?)?;
        self.at += len;
        Some(bytes)
    }

    fn varint(&mut self) -> Option<u64> {
        read_varint(self.sections.code, &mut self.at)
    }

    fn len(&mut self) -> Option<usize> {
        usize::try_from(self.varint()?).ok()
    }
}
