//! Registering the hottest NIFs without rustler's per-call allocation.
//!
//! rustler 0.36's `#[rustler::nif]` wrapper collects a call's arguments into a `Vec<Term>`: an allocation and a
//! free through the VM's allocator on every call, about 45 ns, a third of what `size/1` costs (measured with
//! perf; README, "Benchmarks"). [`lean_nif!`] registers a function through the same inventory `rustler::init!`
//! reads, with the same guarantees (a panic becomes an exception, never an unwind into the VM; the result is
//! encoded by rustler) but with the arguments borrowed where the VM put them. It uses rustler's
//! `codegen_runtime`, the interface its own macro expands to; rustler is pinned, so that cannot shift under us.
//!
//! Kept on purpose, against a simpler `#[rustler::nif]` everywhere: a handshake would not notice 45 ns, but the
//! per-operation goals against ETS would (`size/1` at 1,000 entries: 50 ns against ETS's 58, 1.5x with the Vec),
//! and rustler 0.39, the newest, still collects arguments into a `Vec`. Calls off the hot path use rustler's
//! macro.

/// `lean_nif!("name", arity, function)` where `function(env, [Term; arity])` returns a `NifResult` of
/// something encodable, and decodes its arguments itself.
macro_rules! lean_nif {
    ($erl_name:literal, $arity:literal, $function:path) => {
        rustler::codegen_runtime::inventory::submit!(rustler::Nif {
            name: concat!($erl_name, "\0").as_ptr() as *const rustler::codegen_runtime::c_char,
            arity: $arity,
            flags: 0,
            raw_func: {
                unsafe extern "C" fn raw(
                    env: rustler::codegen_runtime::NIF_ENV,
                    argc: rustler::codegen_runtime::c_int,
                    argv: *const rustler::codegen_runtime::NIF_TERM,
                ) -> rustler::codegen_runtime::NIF_TERM {
                    let lifetime = ();
                    let env = rustler::Env::new(&lifetime, env);
                    // SAFETY: the VM passes `argc` live terms of `env`, and calls this only with the arity
                    // registered here.
                    let args = unsafe { std::slice::from_raw_parts(argv, argc as usize) };
                    let result = std::panic::catch_unwind(|| {
                        let args: [rustler::codegen_runtime::NIF_TERM; $arity] =
                            args.try_into().map_err(|_| rustler::Error::BadArg)?;
                        // SAFETY: each is a live term of `env`, as above.
                        $function(
                            env,
                            args.map(|term| unsafe { rustler::Term::new(env, term) }),
                        )
                    });
                    unsafe { rustler::codegen_runtime::handle_nif_result(result, env).apply(env) }
                }
                raw
            },
        });
    };
}

pub(crate) use lean_nif;
