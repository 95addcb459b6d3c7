//! The encoding of a stored entry: `{Key, Session}` packed into bytes the store owns, plus the few parts bytes do
//! not carry, and rebuilt from them. The memory those bytes live in, and its lifetime, is `entry.rs`'s.
//!
//! Why this representation (README, "The session representation, chosen by measurement", has the numbers).
//! An environment per entry costs about 2.5 KB before the session's own words (the environment with its phony
//! process, and 200 words of heap-fragment slack), which put us at twice ETS's memory. Decoding the external
//! term format costs twice an ETS lookup. So an entry is a compact byte encoding that is quick to rebuild with
//! the NIF API:
//!
//! - atoms are their VM handles (atoms are never freed, so a handle stays valid); integers are varints, those of
//!   0 to 127 and tuples of up to 15 elements one byte, and a repeated time stamp a reference to its first;
//!   binaries up to `INLINE_BINARY_MAX` bytes and Latin-1 strings are their bytes; tuples and lists are
//!   rebuilt from their elements. Binaries up to `SECRET_BINARY_MAX` bytes go to a secret section of their
//!   own behind the entry's key, larger inlined ones to a blob section behind the encoding, which lookups
//!   hand out by reference instead of copying (`bytes.rs`);
//! - what bytes cannot express (bignums, pids, references, funs, maps, bitstrings) and larger binaries are
//!   *held*: copied as terms into an environment of their own (`held.rs`), so large binaries stay shared;
//! - a session's large fields (an own certificate chain, a private key term) are held *shared*: all sessions of
//!   one listener carry the same ones, so the store keeps one copy of each, as ETS cannot.
//!
//! Secrets. The secret section holds every binary of up to 64 bytes (the 48-byte master secret, 32-byte
//! session ids) and is wiped when the entry is dropped (deleted, replaced, or freed with its store). The
//! scratch buffer that section is built in is wiped after every use and never reallocated without wiping its
//! old block; the encoding's and the blobs' scratch buffers are not, as they hold only what the entry keeps
//! unwiped too. Larger binaries (a peer certificate: public) are not wiped, which keeps a delete from touching the
//! whole entry. Held parts are terms in environments, which the NIF API gives no way to wipe; a session's held
//! parts are its config (certificate chain, private key term), not its secrets.
//!
//! A session costs work to pack and to rebuild in proportion to its size: both stop at `SCHEDULER_BUDGET`, and a
//! larger session is handled on a dirty scheduler (`nifs.rs`).
//!
//! Nothing here implements Debug or Display: an entry holds a master secret.

use std::cell::RefCell;
use std::ptr::NonNull;
use std::sync::Arc;

use rustler::sys::{
    enif_get_double, enif_get_list_cell, enif_get_long, enif_get_ulong, enif_make_double,
    enif_make_list_cell, enif_make_list_from_array, enif_make_long, enif_make_new_binary,
    enif_make_string_len, enif_make_tuple_from_array, enif_make_ulong, ErlNifCharEncoding,
    ErlNifEnv, ERL_NIF_TERM,
};
use rustler::{Binary, Env, Term, TermType};
use session_codec::{push_varint, read_varint, reserve_wiped, unzigzag, wipe, zigzag};

use crate::bytes;
pub use crate::entry::Packed;
use crate::entry::{prefetch, Lengths};
use crate::error::CacheError;
use crate::held::{Held, Interner};
use crate::raw;

/// Binaries up to this size are copied into the entry; larger ones are held, shared and never copied.
pub const INLINE_BINARY_MAX: usize = 4096;
/// A session field (an element of the session tuple) that packs to this many bytes or more, or that holds a
/// part, is shared through the store's interner instead. Binaries are not fields of this kind: a peer
/// certificate is different in every session. A listener's EC private key record packs to about 100 bytes and
/// is the same in every session, so it is shared; a session's own compound fields are smaller (its internal id
/// packs to a dozen bytes), so they stay inline rather than each making a held copy of a few kilobytes.
pub const SHARE_MIN_BYTES: usize = 64;
/// Tuples and lists nested deeper than this are held, which bounds the recursion of packing and unpacking.
const MAX_PACK_DEPTH: usize = 32;
/// The depth of a session's fields within `{Key, {session, Field, ...}}`.
const FIELD_DEPTH: usize = 2;
/// Latin-1 strings up to this length pack as bytes (one call into the VM each way).
const STRING_MAX: usize = 255;

/// The work a call may do on a normal scheduler, in units of a byte of an entry's encoding (each term rebuilt
/// costs one or a few) or a word of a held term (`enif_make_copy`), 16 bytes of secrets and blobs copied in, and
/// `HELD_PART_UNITS` for each held part. Packing or unpacking an entry over this budget runs on a dirty CPU
/// scheduler instead (the Erlang wrapper retries there), so no call holds a normal scheduler for near a
/// millisecond. An OTP session costs a few hundred units. Measured on sessions just within it (README,
/// "Guarantees").
pub const SCHEDULER_BUDGET: usize = 8 * 1024;
/// Bytes of secrets and blobs per unit of work: they are copied with `memcpy`.
const BYTES_PER_UNIT: usize = 16;
/// Units of work a held part costs besides its words: an environment made and, when the entry goes, freed, and a
/// copy out of it at each lookup, each a microsecond or so however small the term (a pid, a reference, a
/// bignum). Without it, 2,000 pids or 1,000 small bignums packed within the budget and took 1.5 ms. An OTP session
/// holds two or three parts (its listener's chain and key, shared).
const HELD_PART_UNITS: usize = 128;

/// What copying an entry out costs, in `SCHEDULER_BUDGET`'s units: its encoding's bytes, and its held parts' words
/// and `HELD_PART_UNITS` each. Blobs are handed out by reference.
pub fn copy_cost(code_len: usize, held_words: usize, held_parts: usize) -> usize {
    code_len + held_words + held_parts * HELD_PART_UNITS
}

mod tag {
    pub const NIL: u8 = 0;
    pub const ATOM: u8 = 1;
    pub const INT: u8 = 2;
    pub const UINT: u8 = 3;
    pub const FLOAT: u8 = 4;
    /// A binary of up to `INLINE_BINARY_MAX` bytes, whose bytes are the next ones of the blob section.
    pub const BINARY: u8 = 5;
    pub const STRING: u8 = 6;
    pub const TUPLE: u8 = 7;
    /// Elements, then `END`, then the tail.
    pub const LIST: u8 = 8;
    pub const END: u8 = 9;
    pub const HELD: u8 = 10;
    /// A binary of up to `SECRET_BINARY_MAX` bytes, whose bytes are the next ones of the secret section.
    pub const SECRET: u8 = 11;
    /// A binary equal to the entry's key when the key is a binary (a server's session id: the pair's key and the
    /// session's own id field), whose bytes are those of the key section.
    pub const KEY: u8 = 12;
    /// An integer just above the smallest small integer, counted from it (`LOW_BASE`).
    pub const LOW: u8 = 13;
    /// The same integer as the entry's `LOW` integer numbered by the varint that follows, counting from 0 in the
    /// order they were packed, up to `LOWS_KEPT` of them (a session's time stamp is its internal id's first
    /// element).
    pub const LOW_AGAIN: u8 = 14;
    /// A tuple of arity `byte - SMALL_TUPLE`, below `SMALL_TUPLE_MAX`: one byte instead of two.
    pub const SMALL_TUPLE: u8 = 32;
    pub const SMALL_TUPLE_MAX: u8 = SMALL_TUPLE + 16;
    /// The integer `byte - SMALL_INT`: 0 to `SMALL_INT_MAX` (127) in one byte instead of two or three.
    pub const SMALL_INT: u8 = 128;
    pub const SMALL_INT_MAX: u8 = u8::MAX - SMALL_INT;
}

/// `LOW` integers an entry remembers for `LOW_AGAIN`, on packing and unpacking alike.
const LOWS_KEPT: usize = 4;

/// The `LOW` integers packed or unpacked so far, in order, up to `LOWS_KEPT`.
#[derive(Clone, Copy, Default)]
struct Lows {
    values: [i64; LOWS_KEPT],
    len: usize,
}

impl Lows {
    fn position(&self, value: i64) -> Option<usize> {
        self.values[..self.len].iter().position(|&low| low == value)
    }

    fn push(&mut self, value: i64) {
        if self.len < LOWS_KEPT {
            self.values[self.len] = value;
            self.len += 1;
        }
    }

    fn get(&self, index: usize) -> Option<i64> {
        self.values[..self.len].get(index).copied()
    }
}

/// The smallest small integer on a 64-bit VM, -2^59. `erlang:monotonic_time/0` and `erlang:unique_integer/0`
/// start from about here, so a session's time stamp and internal id sit just above it: as zigzag varints they
/// take 9 bytes each, counted from here 1 to 8 (an hour of uptime in nanoseconds takes 6).
const LOW_BASE: i64 = -(1 << 59);
/// Integers in `LOW_BASE..LOW_BASE + LOW_SPAN` are packed as `LOW`, every other one as `INT` or `UINT`.
const LOW_SPAN: i64 = 1 << 58;

/// Binaries up to this size (a master secret, session ids) are packed into the entry's secret section, the one
/// part of its bytes wiped when it is dropped: a few cache lines, where wiping everything would touch the
/// whole entry (a peer certificate, public, is most of it) on every delete and replace.
pub const SECRET_BINARY_MAX: usize = 64;

impl Packed {
    /// Packs `{key, session}`, `key` being the term whose canonical bytes are `key_bytes`. O(size of the
    /// session), plus a hash and comparison of each shared field. Fails with `HoldsStore` for a session that holds
    /// a store or a cursor of ours, with `OutOfMemory` if the VM has no memory, and with `TooLarge`, having done
    /// O(`budget`) work, for one that costs more than `budget` (see `SCHEDULER_BUDGET`).
    pub fn pack(
        key: Term,
        session: Term,
        key_bytes: &[u8],
        interner: &Interner,
        budget: usize,
    ) -> Result<Packed, CacheError> {
        SCRATCH.with_borrow_mut(|(out, secrets, blobs, held)| {
            let mut packer = Packer {
                out,
                secrets,
                blobs,
                held,
                interner,
                probe: None,
                budget,
                held_words: 0,
                key_binary: session_codec::key::binary_of(key_bytes),
                lows: Lows::default(),
            };
            let packed = match packer.pair(key, session) {
                Ok(end) => {
                    let sections = [
                        key_bytes,
                        &packer.secrets[..],
                        &packer.out[..],
                        &packer.blobs[..],
                    ];
                    u32::try_from(key_bytes.len())
                        .ok()
                        .map(|key| Lengths {
                            key,
                            secret: end.secret,
                            code: end.code,
                            // What `Packed::cost` will find, known here without reading the held parts again.
                            heavy: copy_cost(
                                end.code as usize,
                                packer.held_words,
                                packer.held.len(),
                            ) > SCHEDULER_BUDGET,
                        })
                        .and_then(|lengths| Packed::new(packer.held, lengths, sections))
                        .ok_or(CacheError::OutOfMemory)
                }
                Err(Stop::HoldsStore) => Err(CacheError::HoldsStore),
                Err(Stop::TooLarge) => Err(CacheError::TooLarge),
                Err(Stop::NoMemory | Stop::Share) => Err(CacheError::OutOfMemory),
            };
            // Only the first `len` bytes were written since the last wipe.
            wipe(packer.secrets);
            for buffer in [packer.out, packer.secrets, packer.blobs] {
                buffer.clear();
            }
            // Held parts of an entry not made; an entry made has taken the others.
            packer.held.clear();
            packed
        })
    }

    /// A copy of the session on the caller's heap.
    pub fn session<'a>(&self, env: Env<'a>) -> Option<Term<'a>> {
        self.unpack(env, false)
    }

    /// A copy of `{Key, Session}` on the caller's heap, the element shape foldl hands to its fun.
    pub fn entry<'a>(&self, env: Env<'a>) -> Option<Term<'a>> {
        self.unpack(env, true)
    }

    /// The session, or with `with_key` the pair: the key's encoding follows the session's.
    fn unpack<'a>(&self, env: Env<'a>, with_key: bool) -> Option<Term<'a>> {
        // The certificate's binary will count a reference there (a fold or select comes here directly).
        if let Some(line) = self.vm_line() {
            prefetch(line, 64, true);
        }
        let header = self.header();
        let all = self.bytes();
        let secret_at = header.key_len as usize;
        let code_at = secret_at.checked_add(header.secret_len as usize)?;
        let secrets = all.get(secret_at..code_at)?;
        let code = all.get(code_at..code_at.checked_add(header.code_len as usize)?)?;
        // What a lookup reads, the secret section and the encoding, spans a few cache lines: load them at once.
        prefetch(secrets.as_ptr(), secrets.len() + code.len(), false);
        UNPACK_STACK.with_borrow_mut(|stack| {
            stack.clear();
            let mut unpacker = Unpacker {
                env: env.as_c_arg(),
                block: self.block(),
                all,
                bytes: code,
                at: 0,
                secrets,
                secret_at: 0,
                blob_base: code_at + code.len(),
                blob_at: 0,
                held: self.held(),
                key: all.get(..secret_at)?,
                stack,
                lows: Lows::default(),
            };
            let session = unpacker.term()?;
            let term = if with_key {
                let key = unpacker.term()?;
                // SAFETY: both are terms of the calling process's environment.
                unsafe { enif_make_tuple_from_array(env.as_c_arg(), [key, session].as_ptr(), 2) }
            } else {
                session
            };
            // SAFETY: the term is built in the calling process's environment, which outlives 'a.
            Some(unsafe { Term::new(env, term) })
        })
    }
}

type Scratch = (Vec<u8>, Vec<u8>, Vec<u8>, Vec<Arc<Held>>);

thread_local! {
    /// The buffers entries are packed in (encoding, secret section, blob section, held parts), one set per
    /// scheduler thread, never shrunk. The secret section's is wiped after each use and before any reallocation
    /// frees its old block; the held parts' is emptied after each use.
    static SCRATCH: RefCell<Scratch> =
        const { RefCell::new((Vec::new(), Vec::new(), Vec::new(), Vec::new())) };
}

thread_local! {
    /// The element stack of unpacking, one per scheduler thread, so that a lookup allocates nothing of its own.
    /// It holds term handles only, never bytes of a session.
    static UNPACK_STACK: RefCell<Vec<ERL_NIF_TERM>> = const { RefCell::new(Vec::new()) };
}

struct Packer<'s> {
    out: &'s mut Vec<u8>,
    secrets: &'s mut Vec<u8>,
    blobs: &'s mut Vec<u8>,
    held: &'s mut Vec<Arc<Held>>,
    interner: &'s Interner,
    /// While a session field is tried inline: where its bytes start.
    probe: Option<Cursor>,
    /// The work packing may do (`SCHEDULER_BUDGET`), and the words of the held parts so far.
    budget: usize,
    held_words: usize,
    /// The key's bytes when the key is a binary: binaries equal to it are packed as `KEY`.
    key_binary: Option<&'s [u8]>,
    /// The `LOW` integers packed so far, for `LOW_AGAIN`.
    lows: Lows,
}

/// A position in each section, while packing.
#[derive(Clone, Copy)]
struct Cursor {
    code: u32,
    secret: u32,
    blob: u32,
}

/// Where appended bytes go.
#[derive(Clone, Copy)]
enum Section {
    Code,
    Secrets,
    Blobs,
}

/// Why packing stopped.
enum Stop {
    /// The VM had no memory for a held part.
    NoMemory,
    /// A held part holds a store or a cursor of ours (`held.rs`).
    HoldsStore,
    /// The session field being tried inline is large or holds a part: share it instead.
    Share,
    /// Packing would cost more than its budget.
    TooLarge,
}

impl From<CacheError> for Stop {
    fn from(error: CacheError) -> Self {
        match error {
            CacheError::HoldsStore => Stop::HoldsStore,
            CacheError::TooLarge => Stop::TooLarge,
            _ => Stop::NoMemory,
        }
    }
}

type Packing = Result<(), Stop>;

impl Packer<'_> {
    /// Packs the session, then its key (a lookup reads the session alone, from the start), and returns where
    /// the entry ends. Each is packed as an element of `{Key, Session}`, which is what a fold hands out.
    fn pair(&mut self, key: Term, session: Term) -> Result<Cursor, Stop> {
        self.out.reserve(1024);
        reserve_wiped(self.secrets, 256);
        self.term(session, 1, 1)?;
        self.term(key, 1, 0)?;
        // Checked at every term, and once more for the last: an entry that packs within the budget copies out
        // within it (`Packed::cost`).
        if self.work() > self.budget {
            return Err(Stop::TooLarge);
        }
        self.cursor()
    }

    /// Where packing has got to. Fails for an entry of 4 GiB or more, which the VM would not hand a NIF.
    fn cursor(&self) -> Result<Cursor, Stop> {
        Ok(Cursor {
            code: u32::try_from(self.out.len()).map_err(|_| Stop::NoMemory)?,
            secret: u32::try_from(self.secrets.len()).map_err(|_| Stop::NoMemory)?,
            blob: u32::try_from(self.blobs.len()).map_err(|_| Stop::NoMemory)?,
        })
    }

    /// The work done so far, in `SCHEDULER_BUDGET`'s units.
    fn work(&self) -> usize {
        self.out.len()
            + self.held_words
            + self.held.len() * HELD_PART_UNITS
            + (self.secrets.len() + self.blobs.len()) / BYTES_PER_UNIT
    }

    /// What is left of the budget, in words of a held part: `usize::MAX` for no budget, which lets a held part be
    /// measured however it must be (`weight::measure`).
    fn left(&self) -> usize {
        match self.budget {
            usize::MAX => usize::MAX,
            budget => budget.saturating_sub(self.work()),
        }
    }

    /// Bytes packed since `from`, in all sections.
    fn since(&self, from: Cursor) -> usize {
        let now = self.out.len() + self.secrets.len() + self.blobs.len();
        now - (from.code as usize + from.secret as usize + from.blob as usize)
    }

    /// Packs `term`, element `position` of its parent, at `depth`.
    fn term(&mut self, term: Term, depth: usize, position: usize) -> Packing {
        if self.work() > self.budget {
            return Err(Stop::TooLarge);
        }
        let kind = term.get_type();
        let compound = match kind {
            TermType::Tuple => true,
            TermType::List => !term.is_empty_list(),
            _ => false,
        };
        if depth == FIELD_DEPTH && compound {
            return self.field(term, kind, depth, position);
        }
        self.inline(term, kind, depth)
    }

    /// A session field: packed inline if small and plain, else shared through the interner.
    fn field(&mut self, term: Term, kind: TermType, depth: usize, position: usize) -> Packing {
        if let Some(shared) = self.interner.recent(term, position, self.left()) {
            self.put_held(shared);
            return Ok(());
        }
        let start = self.cursor()?;
        // A field given up for sharing takes back what it packed, the `LOW` integers it remembered with it.
        let lows = self.lows;
        self.probe = Some(start);
        let inline = self.inline(term, kind, depth);
        self.probe = None;
        match inline {
            Ok(()) if self.since(start) < SHARE_MIN_BYTES => return Ok(()),
            Ok(()) | Err(Stop::Share) => {}
            Err(stop @ (Stop::NoMemory | Stop::HoldsStore | Stop::TooLarge)) => return Err(stop),
        }
        self.lows = lows;
        wipe(&mut self.secrets[start.secret as usize..]);
        self.secrets.truncate(start.secret as usize);
        self.out.truncate(start.code as usize);
        self.blobs.truncate(start.blob as usize);
        let shared = self.interner.share(term, position, self.left())?;
        self.put_held(shared);
        Ok(())
    }

    fn inline(&mut self, term: Term, kind: TermType, depth: usize) -> Packing {
        match kind {
            TermType::Atom => {
                self.push(tag::ATOM);
                self.varint(term.as_c_arg() as u64);
            }
            TermType::List if term.is_empty_list() => self.push(tag::NIL),
            TermType::Integer => return self.integer(term),
            TermType::Float => {
                let mut value = 0.0;
                // SAFETY: reads a float term into `value`.
                if unsafe {
                    enif_get_double(term.get_env().as_c_arg(), term.as_c_arg(), &mut value)
                } == 0
                {
                    return self.hold(term);
                }
                self.push(tag::FLOAT);
                self.append(Section::Code, &value.to_le_bytes())?;
            }
            TermType::Binary => match Binary::from_term(term) {
                Ok(binary) if self.key_binary == Some(binary.as_slice()) => self.push(tag::KEY),
                Ok(binary) if binary.len() <= SECRET_BINARY_MAX => {
                    self.push(tag::SECRET);
                    self.varint(binary.len() as u64);
                    self.append(Section::Secrets, binary.as_slice())?;
                }
                Ok(binary) if binary.len() <= INLINE_BINARY_MAX => {
                    self.push(tag::BINARY);
                    self.varint(binary.len() as u64);
                    self.append(Section::Blobs, binary.as_slice())?;
                }
                _ => return self.hold(term),
            },
            TermType::Tuple if depth < MAX_PACK_DEPTH => {
                let Some(elements) = raw::tuple_elements(term) else {
                    return self.hold(term);
                };
                match u8::try_from(elements.len()) {
                    Ok(arity) if arity < tag::SMALL_TUPLE_MAX - tag::SMALL_TUPLE => {
                        self.push(tag::SMALL_TUPLE + arity);
                    }
                    _ => {
                        self.push(tag::TUPLE);
                        self.varint(elements.len() as u64);
                    }
                }
                for (position, element) in elements.enumerate() {
                    self.term(element, depth + 1, position)?;
                }
            }
            TermType::List if depth < MAX_PACK_DEPTH => return self.list(term, depth),
            _ => return self.hold(term),
        }
        Ok(())
    }

    fn integer(&mut self, term: Term) -> Packing {
        let (env, raw) = (term.get_env().as_c_arg(), term.as_c_arg());
        let mut signed = 0;
        let mut unsigned = 0;
        // SAFETY: each call only reads the term and writes its out-parameter.
        if unsafe { enif_get_long(env, raw, &mut signed) } != 0 {
            if let Ok(small @ 0..=tag::SMALL_INT_MAX) = u8::try_from(signed) {
                self.push(tag::SMALL_INT + small);
                return Ok(());
            }
            if (LOW_BASE..LOW_BASE + LOW_SPAN).contains(&signed) {
                match self.lows.position(signed) {
                    Some(index) => {
                        self.push(tag::LOW_AGAIN);
                        self.varint(index as u64);
                    }
                    None => {
                        self.lows.push(signed);
                        self.push(tag::LOW);
                        self.varint((signed - LOW_BASE) as u64);
                    }
                }
                return Ok(());
            }
            self.push(tag::INT);
            self.varint(zigzag(signed));
        } else if unsafe { enif_get_ulong(env, raw, &mut unsigned) } != 0 {
            self.push(tag::UINT);
            self.varint(unsigned);
        } else {
            return self.hold(term);
        }
        Ok(())
    }

    fn list(&mut self, term: Term, depth: usize) -> Packing {
        let mut string = [0u8; STRING_MAX + 1];
        if let Some(len) = raw::latin1(term, &mut string) {
            self.push(tag::STRING);
            self.varint(len as u64);
            return self.append(Section::Code, &string[..len]);
        }
        self.push(tag::LIST);
        let env = term.get_env();
        let mut rest = term.as_c_arg();
        let (mut head, mut tail) = (0, 0);
        // SAFETY: enif_get_list_cell reads one cell of a live list; heads and tails are terms of `env`.
        let mut position = 0;
        while unsafe { enif_get_list_cell(env.as_c_arg(), rest, &mut head, &mut tail) } != 0 {
            self.term(unsafe { Term::new(env, head) }, depth + 1, position)?;
            rest = tail;
            position += 1;
        }
        self.push(tag::END);
        self.term(unsafe { Term::new(env, rest) }, depth + 1, position)
    }

    /// A part for this entry alone; or, inside a session field, the sign to share the field instead.
    fn hold(&mut self, term: Term) -> Packing {
        if self.probe.is_some() {
            return Err(Stop::Share);
        }
        let held = self.interner.hold(term, self.left())?;
        self.put_held(held);
        Ok(())
    }

    fn put_held(&mut self, held: Arc<Held>) {
        self.held_words += held.words();
        self.push(tag::HELD);
        self.varint(self.held.len() as u64);
        self.held.push(held);
    }

    fn varint(&mut self, value: u64) {
        push_varint(self.out, value);
    }

    fn push(&mut self, byte: u8) {
        self.out.push(byte);
    }

    /// Appends bytes to a section; inside a session field, stops once the field is large enough to share.
    fn append(&mut self, section: Section, bytes: &[u8]) -> Packing {
        if self
            .probe
            .is_some_and(|start| self.since(start) + bytes.len() >= SHARE_MIN_BYTES)
        {
            return Err(Stop::Share);
        }
        let buffer = match section {
            Section::Code => &mut *self.out,
            Section::Secrets => {
                reserve_wiped(self.secrets, bytes.len());
                &mut *self.secrets
            }
            Section::Blobs => &mut *self.blobs,
        };
        buffer.extend_from_slice(bytes);
        Ok(())
    }
}

struct Unpacker<'p> {
    env: *mut ErlNifEnv,
    /// The entry's resource object (an entry with blobs has one) and all of its bytes, for binaries handed out
    /// by reference.
    block: Option<NonNull<u8>>,
    all: &'p [u8],
    /// The encoding: the entry's bytes after the secret section.
    bytes: &'p [u8],
    at: usize,
    secrets: &'p [u8],
    secret_at: usize,
    /// Where the blob section starts in the entry's bytes, and the next blob's offset in it.
    blob_base: usize,
    blob_at: usize,
    held: &'p [Arc<Held>],
    /// The key section, whose binary a `KEY` tag stands for (read only when one is met).
    key: &'p [u8],
    /// Elements of the tuples and lists being built, innermost last.
    stack: &'p mut Vec<ERL_NIF_TERM>,
    /// The `LOW` integers met so far, for `LOW_AGAIN`.
    lows: Lows,
}

impl Unpacker<'_> {
    /// Rebuilds the term at `self.at`. `None` only on bytes `Packer` cannot have written, or when the VM has no
    /// memory for a binary. Recursion is bounded by `MAX_PACK_DEPTH`, which `Packer` kept to.
    fn term(&mut self) -> Option<ERL_NIF_TERM> {
        let env = self.env;
        // SAFETY (every call below): `env` is the live environment of the running NIF call; the arrays passed
        // are initialised terms of it; binaries are filled before they are returned.
        unsafe {
            Some(match self.byte()? {
                tag::NIL => enif_make_list_from_array(env, std::ptr::null(), 0),
                tag::ATOM => self.varint()? as ERL_NIF_TERM,
                tag::INT => enif_make_long(env, unzigzag(self.varint()?)),
                tag::UINT => enif_make_ulong(env, self.varint()?),
                tag::LOW => {
                    let low = LOW_BASE.checked_add(i64::try_from(self.varint()?).ok()?)?;
                    self.lows.push(low);
                    enif_make_long(env, low)
                }
                tag::LOW_AGAIN => {
                    let index = self.len()?;
                    enif_make_long(env, self.lows.get(index)?)
                }
                small @ tag::SMALL_INT.. => enif_make_long(env, i64::from(small - tag::SMALL_INT)),
                tag::FLOAT => {
                    enif_make_double(env, f64::from_le_bytes(self.take(8)?.try_into().ok()?))
                }
                tag::BINARY => {
                    let len = self.len()?;
                    let start = self.blob_base.checked_add(self.blob_at)?;
                    self.blob_at += len;
                    let blob = self.all.get(start..start.checked_add(len)?)?;
                    bytes::binary(env, self.block?, blob)
                }
                tag::KEY => new_binary(env, session_codec::key::binary_of(self.key)?)?,
                tag::SECRET => {
                    let len = self.len()?;
                    let end = self.secret_at.checked_add(len)?;
                    let bytes = self.secrets.get(self.secret_at..end)?;
                    self.secret_at = end;
                    new_binary(env, bytes)?
                }
                tag::STRING => {
                    let len = self.len()?;
                    let bytes = self.take(len)?;
                    enif_make_string_len(
                        env,
                        bytes.as_ptr().cast(),
                        len,
                        ErlNifCharEncoding::ERL_NIF_LATIN1,
                    )
                }
                arity @ (tag::TUPLE | tag::SMALL_TUPLE..tag::SMALL_TUPLE_MAX) => {
                    let arity = match arity {
                        tag::TUPLE => self.len()?,
                        small => usize::from(small - tag::SMALL_TUPLE),
                    };
                    let base = self.stack.len();
                    for _ in 0..arity {
                        let element = self.term()?;
                        self.stack.push(element);
                    }
                    let tuple =
                        enif_make_tuple_from_array(env, self.stack[base..].as_ptr(), arity as u32);
                    self.stack.truncate(base);
                    tuple
                }
                tag::LIST => {
                    let base = self.stack.len();
                    while *self.bytes.get(self.at)? != tag::END {
                        let element = self.term()?;
                        self.stack.push(element);
                    }
                    self.at += 1;
                    let proper = *self.bytes.get(self.at)? == tag::NIL;
                    let list = if proper {
                        self.at += 1;
                        let count = u32::try_from(self.stack.len() - base).ok()?;
                        enif_make_list_from_array(env, self.stack[base..].as_ptr(), count)
                    } else {
                        let tail = self.term()?;
                        self.stack[base..]
                            .iter()
                            .rev()
                            .fold(tail, |list, &head| enif_make_list_cell(env, head, list))
                    };
                    self.stack.truncate(base);
                    list
                }
                tag::HELD => self.held.get(self.len()?)?.copy_to(env),
                _ => return None,
            })
        }
    }

    fn byte(&mut self) -> Option<u8> {
        let byte = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(byte)
    }

    fn take(&mut self, len: usize) -> Option<&[u8]> {
        let bytes = self.bytes.get(self.at..self.at.checked_add(len)?)?;
        self.at += len;
        Some(bytes)
    }

    fn varint(&mut self) -> Option<u64> {
        read_varint(self.bytes, &mut self.at)
    }

    fn len(&mut self) -> Option<usize> {
        usize::try_from(self.varint()?).ok()
    }
}

/// A binary of `bytes` on the heap of `env`'s process, or `None` if the VM has no memory for it.
///
/// # Safety
/// `env` must be the live environment of the running NIF call.
unsafe fn new_binary(env: *mut ErlNifEnv, bytes: &[u8]) -> Option<ERL_NIF_TERM> {
    let mut term = 0;
    let data = enif_make_new_binary(env, bytes.len(), &mut term);
    if data.is_null() {
        return None;
    }
    std::ptr::copy_nonoverlapping(bytes.as_ptr(), data, bytes.len());
    Some(term)
}
