//! rustler's terms as the codec sees them (`session_codec::term::Term`), and terms made for it in a caller's
//! environment (`session_codec::term::Build`). The few inspections rustler offers only with an allocation (a
//! tuple's elements, a Latin-1 string) are done here without one, as key encoding runs on every call.

use std::ffi::c_uint;
use std::ptr::NonNull;

use rustler::sys::{
    enif_get_string, enif_get_tuple, enif_make_double, enif_make_list_cell,
    enif_make_list_from_array, enif_make_long, enif_make_new_binary, enif_make_resource_binary,
    enif_make_string_len, enif_make_tuple_from_array, enif_release_binary, enif_term_to_binary,
    ErlNifBinary, ErlNifCharEncoding, ERL_NIF_TERM,
};
use rustler::types::map::MapIterator;
use rustler::{Binary, Env, Term, TermType};
use session_codec::term::{Build, Make, Other, View};

/// A term as the codec sees it.
#[derive(Clone, Copy)]
pub struct Viewed<'a>(pub Term<'a>);

impl<'a> session_codec::term::Term<'a> for Viewed<'a> {
    type Elements = Elements<'a>;

    // Inlined where the codec calls it, so that the view is matched in registers, not returned through memory.
    #[inline(always)]
    fn view(self) -> View<'a, Self> {
        let Viewed(term) = self;
        match term.get_type() {
            // An atom term is its handle in the atom table.
            TermType::Atom => View::Atom(term.as_c_arg() as u64),
            TermType::Integer => match term.decode::<i64>() {
                Ok(value) => View::Integer(value),
                Err(_) => View::Other(Other::BigInteger),
            },
            TermType::Float => match term.decode::<f64>() {
                Ok(value) => View::Float(value),
                Err(_) => View::Other(Other::Bitstring),
            },
            TermType::Binary => match Binary::from_term(term) {
                Ok(binary) => View::Binary(binary.as_slice()),
                Err(_) => View::Other(Other::Bitstring),
            },
            TermType::Tuple => match elements(self) {
                Some(elements) => View::Tuple(elements),
                None => View::Other(Other::Bitstring),
            },
            TermType::List => match term.list_get_cell() {
                Ok((head, tail)) => View::Cons(Viewed(head), Viewed(tail)),
                Err(_) => View::Nil,
            },
            TermType::Map => View::Map(term.map_size().unwrap_or(0)),
            TermType::Pid => View::Other(Other::Pid),
            TermType::Port => View::Other(Other::Port),
            TermType::Ref => View::Other(Other::Reference),
            TermType::Fun => View::Other(Other::Fun),
            TermType::Unknown => View::Other(Other::Reference),
        }
    }

    fn latin1(self, buf: &mut [u8]) -> Option<usize> {
        let capacity = c_uint::try_from(buf.len()).ok()?;
        // SAFETY: enif_get_string only reads the term, and writes at most `capacity` bytes, NUL included, to `buf`.
        let written = unsafe {
            enif_get_string(
                self.0.get_env().as_c_arg(),
                self.0.as_c_arg(),
                buf.as_mut_ptr(),
                capacity,
                ErlNifCharEncoding::ERL_NIF_LATIN1,
            )
        };
        // A positive result counts the bytes and the NUL; 0 means not a Latin-1 list, negative truncated.
        usize::try_from(written)
            .ok()
            .filter(|&n| n > 0)
            .map(|n| n - 1)
    }

    fn external<R>(self, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        // Not rustler's `Term::to_binary`, which panics instead of failing: a panic's exception would carry the
        // call's arguments, an update's session among them.
        let mut binary = std::mem::MaybeUninit::<ErlNifBinary>::uninit();
        // SAFETY: enif_term_to_binary only reads the term and, on success, initialises `binary` with a VM binary,
        // ours until released; its `size` bytes at `data` are read before the release.
        unsafe {
            if enif_term_to_binary(
                self.0.get_env().as_c_arg(),
                self.0.as_c_arg(),
                binary.as_mut_ptr(),
            ) == 0
            {
                return None;
            }
            let mut binary = binary.assume_init();
            let result = f(std::slice::from_raw_parts(binary.data, binary.size));
            enif_release_binary(&mut binary);
            Some(result)
        }
    }

    fn map_entries(self, mut f: impl FnMut(Self, Self)) {
        for (key, value) in MapIterator::new(self.0).into_iter().flatten() {
            f(Viewed(key), Viewed(value));
        }
    }
}

/// A tuple's elements, borrowed from the term itself (rustler's `get_tuple` copies them into a `Vec`).
#[derive(Clone)]
pub struct Elements<'a> {
    env: Env<'a>,
    elements: std::slice::Iter<'a, ERL_NIF_TERM>,
}

fn elements(tuple: Viewed<'_>) -> Option<Elements<'_>> {
    let env = tuple.0.get_env();
    let mut arity = 0;
    let mut array: *const ERL_NIF_TERM = std::ptr::null();
    // SAFETY: enif_get_tuple only reads the term; on success `array` points at `arity` elements that live as long
    // as the term's environment, which `'a` is.
    let elements = unsafe {
        if enif_get_tuple(env.as_c_arg(), tuple.0.as_c_arg(), &mut arity, &mut array) == 0 {
            return None;
        }
        if arity == 0 || array.is_null() {
            &[][..]
        } else {
            std::slice::from_raw_parts(array, usize::try_from(arity).ok()?)
        }
    };
    Some(Elements {
        env,
        elements: elements.iter(),
    })
}

impl<'a> Iterator for Elements<'a> {
    type Item = Viewed<'a>;

    fn next(&mut self) -> Option<Viewed<'a>> {
        let element = *self.elements.next()?;
        Some(Viewed(in_env(self.env, element)))
    }

    fn nth(&mut self, n: usize) -> Option<Viewed<'a>> {
        let element = *self.elements.nth(n)?;
        Some(Viewed(in_env(self.env, element)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.elements.size_hint()
    }
}

impl ExactSizeIterator for Elements<'_> {}

/// A raw term of `env` as a rustler term.
fn in_env(env: Env<'_>, term: ERL_NIF_TERM) -> Term<'_> {
    // SAFETY: every caller passes a term of `env`: a tuple's element, or one made in `env` by `Builder`.
    unsafe { Term::new(env, term) }
}

/// Makes terms in a caller's environment: blobs as binaries that refer to `block`, the entry's resource object,
/// and a held part by `part`.
pub struct Builder<'a, P> {
    env: Env<'a>,
    block: Option<NonNull<u8>>,
    part: P,
}

impl<'a, P: FnMut(usize) -> Option<Term<'a>>> Builder<'a, P> {
    pub fn new(env: Env<'a>, block: Option<NonNull<u8>>, part: P) -> Self {
        Builder { env, block, part }
    }

    /// A term this builder made, as a rustler term.
    pub fn made(&self, term: ERL_NIF_TERM) -> Term<'a> {
        in_env(self.env, term)
    }
}

impl<'a, P: FnMut(usize) -> Option<Term<'a>>> Build for Builder<'a, P> {
    type Term = ERL_NIF_TERM;

    // Inlined where the unpacker calls it, each call then one arm of the match.
    #[inline(always)]
    fn make(&mut self, what: Make<'_, ERL_NIF_TERM>) -> Option<ERL_NIF_TERM> {
        let env = self.env.as_c_arg();
        // Every term passed to `env` (elements, heads, tails) was made in it by this builder or by `part`; an
        // atom's handle came from an atom term, valid for the life of the VM. A new binary's bytes are all written
        // before it is returned. A blob lies in `block`, a live resource object whose blobs nothing writes.
        // SAFETY: as above, in `env`, the live environment of the running NIF call.
        unsafe {
            Some(match what {
                Make::Blob(bytes) if self.block.is_some() => enif_make_resource_binary(
                    env,
                    self.block?.as_ptr().cast(),
                    bytes.as_ptr().cast(),
                    bytes.len(),
                ),
                Make::Nil => enif_make_list_from_array(env, std::ptr::null(), 0),
                Make::Atom(handle) => handle as ERL_NIF_TERM,
                Make::Integer(value) => enif_make_long(env, value),
                Make::Float(value) => enif_make_double(env, value),
                Make::Binary(bytes) | Make::Blob(bytes) => {
                    let mut term = 0;
                    let data = enif_make_new_binary(env, bytes.len(), &mut term);
                    if data.is_null() {
                        return None;
                    }
                    std::ptr::copy_nonoverlapping(bytes.as_ptr(), data, bytes.len());
                    term
                }
                Make::String(bytes) => enif_make_string_len(
                    env,
                    bytes.as_ptr().cast(),
                    bytes.len(),
                    ErlNifCharEncoding::ERL_NIF_LATIN1,
                ),
                Make::Tuple(elements) => enif_make_tuple_from_array(
                    env,
                    elements.as_ptr(),
                    u32::try_from(elements.len()).ok()?,
                ),
                Make::List(heads, None) => {
                    enif_make_list_from_array(env, heads.as_ptr(), u32::try_from(heads.len()).ok()?)
                }
                Make::List(heads, Some(tail)) => heads
                    .iter()
                    .rev()
                    .fold(tail, |list, &head| enif_make_list_cell(env, head, list)),
                Make::Part(index) => (self.part)(index)?.as_c_arg(),
            })
        }
    }
}
