//! What the encodings see of an Erlang term, and what they ask to be built.
//!
//! serde's split: a format walks values through a small trait and knows nothing of who made them. The key
//! encoder (`key`), the session packer (`pack`) and the measure of held parts read terms through [`Term`]; the
//! unpacker (`unpack`) makes them through [`Build`]. The NIF implements both for rustler's terms; the tests
//! implement them for plain Rust values, so every rule of the formats is tested without a VM.

/// One term, as the encoders see it.
pub enum View<'a, T: Term<'a>> {
    /// An atom's handle in the VM's atom table: stable for the life of the VM, never persisted.
    Atom(u64),
    /// An integer that fits in 64 bits.
    Integer(i64),
    Float(f64),
    /// A byte-aligned binary.
    Binary(&'a [u8]),
    Tuple(T::Elements),
    /// The empty list.
    Nil,
    /// A list cell: its head and its tail.
    Cons(T, T),
    /// A map, and how many keys it has.
    Map(usize),
    Other(Other),
}

/// The kinds of term no encoding here spells out: a key encodes them by their external format (or refuses
/// them), a session keeps them as held parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Other {
    /// An integer beyond 64 bits.
    BigInteger,
    Pid,
    Port,
    Reference,
    Fun,
    /// A bitstring that is not whole bytes.
    Bitstring,
}

/// A term of some environment that lives for `'a`.
pub trait Term<'a>: Copy + 'a {
    /// A tuple's elements. `nth` should be O(1): a packing resumed on another scheduler goes back to the element it
    /// stopped at.
    type Elements: ExactSizeIterator<Item = Self> + Clone;

    fn view(self) -> View<'a, Self>;

    /// Copies a proper list of bytes (a Latin-1 string) into `buf` if it has fewer than `buf.len()`; returns
    /// how many. Reads at most `buf.len()` cells however long the list is.
    fn latin1(self, buf: &mut [u8]) -> Option<usize>;

    /// `f` applied to the term's external format, or `None` if there is no memory for it.
    fn external<R>(self, f: impl FnOnce(&[u8]) -> R) -> Option<R>;

    /// Calls `f` with each key and value of a map; does nothing for any other term.
    fn map_entries(self, f: impl FnMut(Self, Self));
}

/// A term to make, its parts already made.
pub enum Make<'b, T> {
    Nil,
    Atom(u64),
    Integer(i64),
    Float(f64),
    /// A binary of these bytes.
    Binary(&'b [u8]),
    /// A binary of these bytes, which lie in the entry's blob section: one that refers to them may be made instead
    /// of a copy.
    Blob(&'b [u8]),
    /// A list of these bytes (a Latin-1 string).
    String(&'b [u8]),
    Tuple(&'b [T]),
    /// A list of these heads, ending in `[]` (`None`) or in an improper tail.
    List(&'b [T], Option<T>),
    /// A copy of the entry's held part of this number.
    Part(usize),
}

/// Makes terms in some environment.
pub trait Build {
    type Term: Copy;

    /// The term, or `None` if the VM has no memory for it.
    fn make(&mut self, what: Make<'_, Self::Term>) -> Option<Self::Term>;
}
