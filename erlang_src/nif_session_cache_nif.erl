%%% @private
%%% The NIF library's loader and its not-loaded stubs. Users call nif_session_cache, never this module.
%%% Every function here is implemented in native/nif_session_cache/src/ (nifs.rs, walk.rs, shared.rs), whose doc
%%% comments state the scheduler each runs on and its cost. None of them spends more than its budget of work on a
%%% normal scheduler: what costs more goes on on a dirty one, through the *_dirty functions.
-module(nif_session_cache_nif).

-export([new/1, terminate/1, lookup/2, update/3, delete/2, size/1, select/2, next/1, fold/2,
         info/1, stores/0]).
%% Each library loaded in this VM, and its stores (stores/0 lists them all).
-export([library/0, stores/1]).
%% The same calls on a dirty CPU scheduler, for sessions too costly for a normal one.
-export([lookup_dirty/2, update_dirty/4, next_dirty/1, fold_dirty/2]).
%% The shared level (nif_session_cache_shared).
-export([share/2, publish/4, fetch/2, unusable/1]).
-export_type([store/0, cursor/0, info/0, write_result/0, resume/0, library/0]).

-nifs([new/1, terminate/1, lookup/2, update/3, delete/2, size/1, select/2, next/1, fold/2,
       info/1, library/0, stores/1, lookup_dirty/2, update_dirty/4, next_dirty/1, fold_dirty/2,
       share/2, publish/4, fetch/2, unusable/1]).
-on_load(load/0).

%% Called directly in each stub, so that dialyzer trusts the stub's spec.
-define(NOT_LOADED, erlang:nif_error({not_loaded, [{module, ?MODULE}, {line, ?LINE}]})).

-type store() :: reference().
%% A handle on one loaded library, through which stores/1 reaches its stores.
-type library() :: reference().
-type cursor() :: reference().
%% A packing that stopped for its budget on a normal scheduler, and what is left of it (update_dirty/4).
-type resume() :: reference().
-type items() :: [{0..2, term(), non_neg_integer(), non_neg_integer()}].
-type info() :: #{id := pos_integer(),
                  role := client | server | undefined,
                  owner := pid(),
                  entries := non_neg_integer(),
                  bytes := non_neg_integer(),
                  held_bytes := non_neg_integer(),
                  index_bytes := non_neg_integer(),
                  terminated := boolean(),
                  lookup_hits := non_neg_integer(),
                  lookup_misses := non_neg_integer(),
                  inserts := non_neg_integer(),
                  replaces := non_neg_integer(),
                  deletes := non_neg_integer(),
                  select_hits := non_neg_integer(),
                  select_misses := non_neg_integer(),
                  scheduler := #{budget := pos_integer(),
                                 largest_call := non_neg_integer(),
                                 dirty_calls := non_neg_integer(),
                                 freed_later := non_neg_integer()},
                  shared => map()}.
%% Writes return their failure instead of raising it (see nif_session_cache:ok_or_raise/1). unreachable: the write
%% was lost, on a store of a library this one cannot call (its ABI version is unknown).
-type write_result() :: ok | badarg | not_owner | terminated | bad_key | holds_store | enomem | internal_error
                      | unreachable.
%% What update/3 and update_dirty/4 answer: publish for a store whose shared level is to get the session.
-type update_result() :: write_result() | publish.
-type miss_reason() :: absent | breaker_open | busy | timeout | error | unsealed | unusable | auth.
%% A chunk of a select, and whether more follow.
-type chunk(Item) :: {[Item], done | cursor()}.
%% A chunk of a fold, and the fold slot to go on from: a plain integer, so a fold needs no cursor.
-type fold_chunk() :: {[{term(), term()}], done | non_neg_integer()}.

%% Where this VM keeps the number of loads of the library so far, and a handle on each library loaded, by its
%% mapping: a library stays mapped, with its stores, after newer ones load (native/nif_session_cache/src/object.rs).
-define(LIBRARIES, {?MODULE, libraries}).

-spec load() -> ok | {error, term()}.
load() ->
    %% The release tells the library what the VM's allocators add to each entry, for info/1's figures; the load's
    %% number keeps every library's store ids apart.
    Release = list_to_integer(erlang:system_info(otp_release)),
    {Loads, Libraries} = persistent_term:get(?LIBRARIES, {0, #{}}),
    case erlang:load_nif(filename:join(priv_dir(), atom_to_list(?MODULE)), {Release, Loads + 1}) of
        ok ->
            {Library, Mapping} = library(),
            persistent_term:put(?LIBRARIES, {Loads + 1, Libraries#{Mapping => Library}});
        Error ->
            Error
    end.

%% info/1 of every live store, of every library loaded in this VM, oldest first.
-spec stores() -> [info()].
stores() ->
    {_, Libraries} = persistent_term:get(?LIBRARIES, {0, #{}}),
    Infos = lists:append([stores(Library) || Library <- maps:values(Libraries)]),
    lists:sort(fun(#{id := A}, #{id := B}) -> A =< B end, Infos).

%% The application's priv dir, or the priv dir beside this module's ebin when the code was added by path only.
-spec priv_dir() -> file:filename().
priv_dir() ->
    case code:priv_dir(nif_session_cache) of
        {error, bad_name} ->
            filename:join(filename:dirname(filename:dirname(code:which(?MODULE))), "priv");
        Dir ->
            Dir
    end.

-spec new(client | server | undefined) -> store().
new(_Role) -> ?NOT_LOADED.

-spec terminate(store()) -> write_result().
terminate(_Store) -> ?NOT_LOADED.

%% {ok, Session}, or undefined; remote for a miss in a store with a shared level; dirty for a session too costly to
%% copy on a normal scheduler, having done nothing.
-spec lookup(store(), term()) -> {ok, term()} | undefined | remote | dirty.
lookup(_Store, _Key) -> ?NOT_LOADED.

-spec lookup_dirty(store(), term()) -> {ok, term()} | undefined.
lookup_dirty(_Store, _Key) -> ?NOT_LOADED.

%% Stores the session, or stops where its budget ran out and hands back what is left: update_dirty/4 finishes it.
-spec update(store(), term(), term()) -> update_result() | {dirty, resume(), items()}.
update(_Store, _Key, _Session) -> ?NOT_LOADED.

-spec update_dirty(store(), term(), resume(), items()) -> update_result().
update_dirty(_Store, _Key, _Resume, _Items) -> ?NOT_LOADED.

-spec delete(store(), term()) -> write_result().
delete(_Store, _Key) -> ?NOT_LOADED.

-spec size(store()) -> non_neg_integer().
size(_Store) -> ?NOT_LOADED.

-spec select(store(), term()) -> chunk(term()).
select(_Store, _PartialKey) -> ?NOT_LOADED.

-spec fold(store(), non_neg_integer()) -> fold_chunk() | dirty.
fold(_Store, _From) -> ?NOT_LOADED.

-spec fold_dirty(store(), non_neg_integer()) -> fold_chunk().
fold_dirty(_Store, _From) -> ?NOT_LOADED.

-spec next(cursor()) -> chunk(term()) | dirty.
next(_Cursor) -> ?NOT_LOADED.

-spec next_dirty(cursor()) -> chunk(term()).
next_dirty(_Cursor) -> ?NOT_LOADED.

%% Gives a server store a shared level: Config is checked by nif_session_cache_shared. Owner only.
-spec share(store(), map()) -> ok | {error, atom()}.
share(_Store, _Config) -> ?NOT_LOADED.

%% Queues what nif_session_cache_shared made of a session just stored under Id, for Redis to keep TtlMs. Owner
%% only; never waits. auth: queued, and Redis refused the credentials lately (once, to warn).
-spec publish(store(), binary(), term(), non_neg_integer()) -> write_result() | auth.
publish(_Store, _Id, _Payload, _TtlMs) -> ?NOT_LOADED.

%% A session's bytes from Redis, opened, with the lifetime margin in seconds; on a dirty IO scheduler. A miss says
%% whether to warn, once, that Redis refused the credentials.
-spec fetch(store(), binary()) -> {ok, binary(), non_neg_integer()} | {miss, miss_reason(), boolean()}.
fetch(_Store, _Id) -> ?NOT_LOADED.

%% Counts a fetched session that could not be used as a miss.
-spec unusable(store()) -> ok.
unusable(_Store) -> ?NOT_LOADED.

-spec info(store()) -> info().
info(_Store) -> ?NOT_LOADED.

%% A handle on the library loaded now, and the number of its mapping (the same for every handle on it).
-spec library() -> {library(), pos_integer()}.
library() -> ?NOT_LOADED.

-spec stores(library()) -> [info()].
stores(_Library) -> ?NOT_LOADED.

