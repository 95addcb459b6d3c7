%%% A TLS session cache for OTP's ssl whose entries live in a Rust store, off every process heap.
%%%
%%% Configure it with {ssl, [{session_cb, nif_session_cache}, {client_session_cb, nif_session_cache},
%%% {server_session_cb, nif_session_cache}]}: OTP 25 and 27 read only the first, OTP 29's connections and listeners
%%% read the other two (check_config/0). OTP then calls the callbacks below; their contract, as OTP really uses
%%% it, is:
%%%
%%%   init/1            every call returns a fresh, empty, isolated store owned by the caller.
%%%   update/3, delete/2, terminate/1
%%%                     owner only. Any other process gets error:{badarg, not_owner}, and the store is unchanged.
%%%                     A write to a terminated store raises {badarg, terminated}; an update with a key the
%%%                     store cannot hold (a map, a fun, a bitstring, nesting deeper than 16, an encoding over
%%%                     4 KiB) raises {badarg, bad_key}; a session that holds a store or a fold cursor of this
%%%                     library (in its tuples, lists or maps) raises {badarg, holds_store}, as its entry would
%%%                     keep that store alive for good; anything but a store raises badarg.
%%%   lookup/2, select_session/2, size/1, foldl/3
%%%                     any process, concurrently with the owner's writes. lookup and select_session never raise
%%%                     on a junk key; they find nothing. select_session and foldl take 64 entries per NIF call,
%%%                     however many match; an entry present for the whole call is returned or visited exactly
%%%                     once, and one added or removed meanwhile may or may not be.
%%%
%%% No call spends more than a fixed budget of work on a normal scheduler, whatever the session (a small fraction
%%% of a millisecond): a session that costs more to copy or to pack goes on on a dirty CPU scheduler, and the work
%%% is done once. info/1's scheduler map accounts for it.
%%%
%%% The store never evicts on its own: OTP's session_cache_client_max, session_cache_server_max and
%%% session_lifetime bound it, and OTP crashes its cache processes if entries vanish behind its back.
%%% Only TLS 1.0-1.2 and DTLS session-ID resumption come here; TLS 1.3 tickets never do.
%%% Sessions hold master secrets: nothing in this module or the NIF logs or formats one.
-module(nif_session_cache).

-behaviour(ssl_session_cache_api).

-export([init/1, terminate/1, lookup/2, update/3, delete/2, foldl/3, select_session/2, size/1]).
-export([info/1, stores/0, listener_store/1, client_store/0, check_config/0]).
-export_type([store/0]).

-type store() :: nif_session_cache_nif:store().

%% Returns a new empty store owned by the calling process. Args is OTP's option list: a {role, client | server}
%% property when OTP says which (it does not when it re-creates a client store), and session_cb_init_args,
%% which are accepted and ignored. O(1). The first init in a VM whose ssl configuration cannot work on this OTP
%% release logs a warning naming the keys to set (check_config/0).
-spec init(term()) -> store().
init(Args) ->
    ok = nif_session_cache_config:warn_once(),
    Role = role(Args),
    Store = nif_session_cache_nif:new(Role),
    ok = nif_session_cache_shared:attach(Store, Role, Args),
    Store.

%% Empties the store for good and releases its memory (a large store is freed on a background thread). Owner
%% only. OTP calls it only for the client store: a listener's store is freed when its cache process exits and
%% the last reference is garbage-collected. Later writes raise {badarg, terminated}; reads find nothing.
-spec terminate(store()) -> ok.
terminate(Store) ->
    ok_or_raise(nif_session_cache_nif:terminate(Store)).

%% The session stored under Key, exactly as stored (=:=), or undefined. Never raises for any Key. O(1).
-spec lookup(store(), term()) -> ssl_session_cache_api:session() | undefined.
lookup(Store, Key) ->
    case nif_session_cache_nif:lookup(Store, Key) of
        {ok, Session} -> Session;
        undefined -> undefined;
        remote -> nif_session_cache_shared:lookup(Store, Key);
        dirty -> found(nif_session_cache_nif:lookup_dirty(Store, Key))
    end.

%% Inserts or replaces. Owner only. Keys are opaque terms (maps and funs excepted: {badarg, bad_key}). A session
%% holding a store or cursor of ours is refused ({badarg, holds_store}).
%% Returns ok; OTP ignores the result and keeps using Store, which is mutable. O(size of the session).
-spec update(store(), term(), term()) -> ok.
update(Store, Key, Session) ->
    case nif_session_cache_nif:update(Store, Key, Session) of
        {dirty, Resume, Items} -> stored(Store, Key, Session, nif_session_cache_nif:update_dirty(Store, Key, Resume, Items));
        Result -> stored(Store, Key, Session, Result)
    end.

%% Removes Key. Idempotent: deleting a missing key returns ok. Owner only. O(1).
-spec delete(store(), term()) -> ok.
delete(Store, Key) ->
    ok_or_raise(nif_session_cache_nif:delete(Store, Key)).

%% Fun({Key, Session}, Acc) over every entry; Acc0 when empty. The walk is done in chunks of at most 64
%% entries, with no native lock held while Fun runs, so Fun may delete (OTP's validator does). An entry present
%% for the whole fold is visited exactly once; entries added or removed meanwhile may or may not be.
-spec foldl(fun(({term(), term()}, Acc) -> Acc), Acc, store()) -> Acc.
foldl(Fun, Acc0, Store) when is_function(Fun, 2) ->
    fold_from(Store, 0, Fun, Acc0);
foldl(_Fun, _Acc0, _Store) ->
    erlang:error(badarg).

%% Every session whose key is {PartialKey, _}, in no particular order, or []. Never raises for any PartialKey.
%% O(matches), through an index by partial key.
-spec select_session(store(), term()) -> [ssl_session_cache_api:session()].
select_session(Store, PartialKey) ->
    collect(nif_session_cache_nif:select(Store, PartialKey), []).

%% The exact number of entries. O(1).
-spec size(store()) -> non_neg_integer().
size(Store) ->
    nif_session_cache_nif:size(Store).

%% What a store holds and who owns it. Any process. O(1).
-spec info(store()) -> nif_session_cache_nif:info().
info(Store) ->
    nif_session_cache_nif:info(Store).

%% info/1 of every live store in this VM, oldest first. Keeps none of them alive. O(stores), on a dirty CPU
%% scheduler.
-spec stores() -> [nif_session_cache_nif:info()].
stores() ->
    nif_session_cache_nif:stores().

%% info/1 of the store a listener keeps its sessions in, given its listen socket: the store whose owner is one of
%% the processes the socket refers to (OTP starts a cache process per listener, which calls our init/1). No field
%% of ssl's own records is read, so this holds across releases. {error, not_found} if that listener's cache is
%% not ours.
-spec listener_store(ssl:sslsocket()) -> {ok, nif_session_cache_nif:info()} | {error, not_found}.
listener_store(ListenSocket) ->
    Processes = pids(ListenSocket, []),
    case [Info || #{owner := Owner} = Info <- stores(), lists:member(Owner, Processes)] of
        [Info | _] -> {ok, Info};
        [] -> {error, not_found}
    end.

%% info/1 of the client store: the one ssl_manager made last (it makes another when ssl restarts, or when a write
%% raised). {error, not_found} if ssl's client store is not ours.
-spec client_store() -> {ok, nif_session_cache_nif:info()} | {error, not_found}.
client_store() ->
    Manager = whereis(ssl_manager),
    case [Info || #{owner := Owner, terminated := false} = Info <- stores(), Owner =:= Manager] of
        [] -> {error, not_found};
        Infos -> {ok, lists:last(Infos)}
    end.

%% Which module ssl uses on this node for each of its three kinds of caller (ssl_manager's client store, client
%% connections, listeners), which ssl key each came from, and what cannot work. The keys each OTP release reads
%% differ: OTP 29's connections and listeners read client_session_cb and server_session_cb, where 25 and 27 read
%% only session_cb. Setting all three to nif_session_cache works everywhere.
-spec check_config() -> nif_session_cache_config:report().
check_config() ->
    nif_session_cache_config:check().

%%% Internal

found({ok, Session}) -> Session;
found(undefined) -> undefined.

%% A store with a shared level asks for the session it stored to be published.
stored(Store, Key, Session, publish) -> nif_session_cache_shared:publish(Store, Key, Session);
stored(_Store, _Key, _Session, Result) -> ok_or_raise(Result).

%% Writes report failure as an atom and are raised here, with erlang:error/1: its stack trace names the
%% function's arity, not its arguments, so a session passed to update/3 never reaches a crash report.
-spec ok_or_raise(nif_session_cache_nif:write_result()) -> ok.
ok_or_raise(ok) -> ok;
ok_or_raise(unreachable) -> unreachable();
ok_or_raise(badarg) -> erlang:error(badarg);
ok_or_raise(Reason) -> erlang:error({badarg, Reason}).

%% A store made by a library this one cannot call (one of another ABI major version, which only a deliberate
%% break of the ABI makes) answers misses, and its writes are lost: said once per VM.
-spec unreachable() -> ok.
unreachable() ->
    case persistent_term:get({?MODULE, unreachable}, false) of
        true ->
            ok;
        false ->
            persistent_term:put({?MODULE, unreachable}, true),
            logger:warning("nif_session_cache: a store made by a library of another ABI version answers misses "
                           "and loses writes; ssl's caches make new stores when ssl restarts")
    end.

-spec role(term()) -> client | server | undefined.
role([{role, Role} | _]) when Role =:= client; Role =:= server -> Role;
role([_ | Rest]) -> role(Rest);
role(_) -> undefined.

%% Every pid inside a term.
pids(Pid, Acc) when is_pid(Pid) -> [Pid | Acc];
pids(Tuple, Acc) when is_tuple(Tuple) -> pids(tuple_to_list(Tuple), Acc);
pids([Head | Tail], Acc) -> pids(Tail, pids(Head, Acc));
pids(Map, Acc) when is_map(Map) -> pids(maps:to_list(Map), Acc);
pids(_Other, Acc) -> Acc.

%% A fold's state is the store and the slot to go on from, so it goes on across a reload of the NIF library.
fold_from(Store, Slot, Fun, Acc) ->
    Chunk = case nif_session_cache_nif:fold(Store, Slot) of
                dirty -> nif_session_cache_nif:fold_dirty(Store, Slot);
                Entries -> Entries
            end,
    case Chunk of
        {Items, done} -> lists:foldl(Fun, Acc, Items);
        {Items, Next} -> fold_from(Store, Next, Fun, lists:foldl(Fun, Acc, Items))
    end.

collect({Items, done}, Acc) ->
    lists:append(Items, Acc);
collect({Items, Cursor}, Acc) ->
    collect(next(Cursor), lists:append(Items, Acc)).

next(Cursor) ->
    case nif_session_cache_nif:next(Cursor) of
        dirty -> nif_session_cache_nif:next_dirty(Cursor);
        Chunk -> Chunk
    end.
