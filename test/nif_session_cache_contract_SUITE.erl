%%% The ssl_session_cache_api contract, callback by callback, for both roles: what OTP's ssl relies on, as the
%%% header of erlang_src/nif_session_cache.erl states it (read from ssl's own ssl_manager, ssl_server_session_cache
%%% and ssl_client_session_cache_db). No TLS here; nif_session_cache_tls_SUITE proves the same through real
%%% handshakes.
-module(nif_session_cache_contract_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-import(nif_session_cache_test_lib, [catch_error/1, in_other_process/1]).

-export([all/0, groups/0, init_per_group/2, end_per_group/2]).
-export([init_gives_a_fresh_empty_store_with_or_without_a_role/1,
         two_inits_are_isolated/1,
         update_is_an_upsert_on_a_mutable_store/1,
         delete_is_idempotent/1,
         lookup_returns_the_exact_stored_term/1,
         size_is_exact_through_inserts_replaces_and_deletes/1,
         select_session_returns_exactly_the_partial_key_matches/1,
         select_session_spans_many_chunks/1,
         select_session_across_chunks_keeps_its_promise_while_the_owner_writes/1,
         foldl_passes_key_session_pairs_and_accumulates/1,
         foldl_on_an_empty_store_returns_acc0/1,
         foldl_tolerates_deletes_from_the_fun/1,
         junk_keys_on_read_paths_find_nothing/1,
         writes_from_a_foreign_process_raise_and_change_nothing/1,
         reads_from_a_foreign_process_work/1,
         terminate_releases_the_store/1]).

all() ->
    [{group, client}, {group, server}].

groups() ->
    Cases = [init_gives_a_fresh_empty_store_with_or_without_a_role,
             two_inits_are_isolated,
             update_is_an_upsert_on_a_mutable_store,
             delete_is_idempotent,
             lookup_returns_the_exact_stored_term,
             size_is_exact_through_inserts_replaces_and_deletes,
             select_session_returns_exactly_the_partial_key_matches,
             select_session_spans_many_chunks,
             select_session_across_chunks_keeps_its_promise_while_the_owner_writes,
             foldl_passes_key_session_pairs_and_accumulates,
             foldl_on_an_empty_store_returns_acc0,
             foldl_tolerates_deletes_from_the_fun,
             junk_keys_on_read_paths_find_nothing,
             writes_from_a_foreign_process_raise_and_change_nothing,
             reads_from_a_foreign_process_work,
             terminate_releases_the_store],
    [{client, [shuffle], Cases}, {server, [shuffle], Cases}].

init_per_group(Role, Config) ->
    [{role, Role} | Config].

end_per_group(_, _) ->
    ok.

%%% Cases

init_gives_a_fresh_empty_store_with_or_without_a_role(Config) ->
    Role = ?config(role, Config),
    Args = [[{role, Role}], [{role, Role}, {unknown, property}, junk], [], [{unknown, 1}], not_a_list],
    [begin
         Store = nif_session_cache:init(A),
         ?assertEqual(0, nif_session_cache:size(Store)),
         ?assertEqual([], nif_session_cache:foldl(fun(E, Acc) -> [E | Acc] end, [], Store)),
         ?assertEqual(self(), maps:get(owner, nif_session_cache:info(Store)))
     end || A <- Args],
    ?assertEqual(Role, maps:get(role, nif_session_cache:info(nif_session_cache:init([{role, Role}])))),
    ?assertEqual(undefined, maps:get(role, nif_session_cache:info(nif_session_cache:init([])))).

two_inits_are_isolated(Config) ->
    Role = ?config(role, Config),
    A = nif_session_cache:init([{role, Role}]),
    B = nif_session_cache:init([{role, Role}]),
    K = key(Role, 1),
    ok = nif_session_cache:update(A, K, session(1)),
    ?assertEqual(session(1), nif_session_cache:lookup(A, K)),
    ?assertEqual(undefined, nif_session_cache:lookup(B, K)),
    ?assertEqual({1, 0}, {nif_session_cache:size(A), nif_session_cache:size(B)}),
    ?assertEqual([], nif_session_cache:select_session(B, partial(Role))).

update_is_an_upsert_on_a_mutable_store(Config) ->
    Role = ?config(role, Config),
    Store = nif_session_cache:init([{role, Role}]),
    K = key(Role, 1),
    %% OTP ignores the return value and keeps using the reference it had.
    _ = nif_session_cache:update(Store, K, session(1)),
    ?assertEqual(session(1), nif_session_cache:lookup(Store, K)),
    _ = nif_session_cache:update(Store, K, session(2)),
    ?assertEqual(session(2), nif_session_cache:lookup(Store, K)),
    ?assertEqual(1, nif_session_cache:size(Store)).

delete_is_idempotent(Config) ->
    Role = ?config(role, Config),
    Store = nif_session_cache:init([{role, Role}]),
    K = key(Role, 1),
    ok = nif_session_cache:update(Store, K, session(1)),
    ok = nif_session_cache:update(Store, key(Role, 2), session(2)),
    ?assertEqual(ok, nif_session_cache:delete(Store, K)),
    ?assertEqual(ok, nif_session_cache:delete(Store, K)),
    ?assertEqual(ok, nif_session_cache:delete(Store, key(Role, 99))),
    ?assertEqual(undefined, nif_session_cache:lookup(Store, K)),
    ?assertEqual(session(2), nif_session_cache:lookup(Store, key(Role, 2))),
    ?assertEqual(1, nif_session_cache:size(Store)).

lookup_returns_the_exact_stored_term(Config) ->
    Role = ?config(role, Config),
    Store = nif_session_cache:init([{role, Role}]),
    <<_:3/binary, Sub:40/binary, _/binary>> = crypto:strong_rand_bytes(2000),
    Values = [session(1), realistic_session(), Sub, 1.0, -0.0, 1 bsl 200, [], <<>>, {}, #{a => [1, 2]},
              [1 | improper], self(), make_ref(), fun erlang:abs/1, <<1:7>>, lists:seq(1, 5000)],
    [begin
         K = key(Role, N),
         ok = nif_session_cache:update(Store, K, V),
         Got = nif_session_cache:lookup(Store, K),
         ?assert(Got =:= V, {value, N})
     end || {N, V} <- lists:zip(lists:seq(1, length(Values)), Values)],
    ?assertEqual(undefined, nif_session_cache:lookup(Store, key(Role, 1000))).

size_is_exact_through_inserts_replaces_and_deletes(Config) ->
    Role = ?config(role, Config),
    Store = nif_session_cache:init([{role, Role}]),
    [ok = nif_session_cache:update(Store, key(Role, N), session(N)) || N <- lists:seq(1, 300)],
    ?assertEqual(300, nif_session_cache:size(Store)),
    [ok = nif_session_cache:update(Store, key(Role, N), session(-N)) || N <- lists:seq(1, 100)],
    ?assertEqual(300, nif_session_cache:size(Store)),
    [ok = nif_session_cache:delete(Store, key(Role, N)) || N <- lists:seq(1, 300, 3)],
    ?assertEqual(200, nif_session_cache:size(Store)),
    ?assertEqual(200, nif_session_cache:foldl(fun(_, Acc) -> Acc + 1 end, 0, Store)).

select_session_returns_exactly_the_partial_key_matches(Config) ->
    Store = nif_session_cache:init([{role, ?config(role, Config)}]),
    Hosts = ["example.com", "example.org", {127, 0, 0, 1}, {10, 0, 0, 1},
             {0, 0, 0, 0, 0, 0, 0, 1}, {16#fe80, 0, 0, 0, 0, 0, 0, 1}],
    Partials = [{H, P} || H <- Hosts, P <- [443, 8443]],
    Entries = [{{PK, <<I:256>>}, {session, PK, I}}
               || {N, PK} <- lists:zip(lists:seq(1, length(Partials)), Partials), I <- lists:seq(1, N)],
    [ok = nif_session_cache:update(Store, K, S) || {K, S} <- Entries],
    %% Server-shaped keys (bare ids) share the store but belong to no partial key.
    [ok = nif_session_cache:update(Store, <<I:256>>, {server, I}) || I <- lists:seq(1, 5)],
    [?assertEqual(lists:sort([S || {{P, _}, S} <- Entries, P =:= PK]),
                  lists:sort(nif_session_cache:select_session(Store, PK)))
     || PK <- Partials],
    ?assertEqual([], nif_session_cache:select_session(Store, {"example.net", 443})),
    ?assertEqual([], nif_session_cache:select_session(Store, {"example.com", 444})),
    ?assertEqual([], nif_session_cache:select_session(Store, {<<"example.com">>, 443})),
    ?assertEqual([], nif_session_cache:select_session(Store, 443)).

select_session_spans_many_chunks(Config) ->
    Store = nif_session_cache:init([{role, ?config(role, Config)}]),
    PK = {"many.example", 443},
    [ok = nif_session_cache:update(Store, {PK, <<I:256>>}, session(I)) || I <- lists:seq(1, 1000)],
    ok = nif_session_cache:update(Store, {{"other.example", 443}, <<1:256>>}, session(0)),
    ?assertEqual([session(I) || I <- lists:seq(1, 1000)],
                 lists:sort(nif_session_cache:select_session(Store, PK))).

%% Drives the cursor of a select of 1,000 sessions by hand. Between chunks the owner deletes the session the
%% select would hand out next (the newest not yet handed out), puts half of them back, files a session of
%% another partial key, and adds a new one of this partial key. Every session present throughout comes out
%% exactly once, and none of another partial key. Then the store is terminated under an open cursor: the
%% select ends.
select_session_across_chunks_keeps_its_promise_while_the_owner_writes(Config) ->
    Store = nif_session_cache:init([{role, ?config(role, Config)}]),
    PK = {"many.example", 443},
    Other = {"other.example", 443},
    [ok = nif_session_cache:update(Store, {PK, <<I:256>>}, session(I)) || I <- lists:seq(1, 1000)],
    {First, Cursor} = nif_session_cache_nif:select(Store, PK),
    {Out, Deleted} = drive(Store, PK, Other, First, Cursor, [], 2000),
    Ids = [I || {session, I, _} <- Out],
    ?assertEqual(length(Out), length(Ids)),
    ?assert(length(Deleted) > 5),
    Counts = lists:foldl(fun(I, Acc) -> maps:update_with(I, fun(C) -> C + 1 end, 1, Acc) end, #{}, Ids),
    [?assertEqual({I, 1}, {I, maps:get(I, Counts, 0)}) || I <- lists:seq(1, 1000), not lists:member(I, Deleted)],
    [?assert(C =< 2) || C <- maps:values(Counts)],
    ?assertEqual([], [I || I <- Ids, I >= 10000]),
    {_, Open} = nif_session_cache_nif:select(Store, PK),
    ok = nif_session_cache:terminate(Store),
    ?assertMatch({_, done}, nif_session_cache_nif:next(Open)).

drive(_Store, _PK, _Other, Items, done, Out, _New) ->
    {Items ++ Out, []};
drive(Store, PK, Other, Items, Cursor, Out, New) ->
    Given = [I || {session, I, _} <- Items ++ Out],
    Deleted =
        case [I || I <- lists:seq(1000, 1, -1), not lists:member(I, Given),
                   nif_session_cache:lookup(Store, {PK, <<I:256>>}) =:= session(I)] of
            [Next | _] ->
                ok = nif_session_cache:delete(Store, {PK, <<Next:256>>}),
                [ok = nif_session_cache:update(Store, {PK, <<Next:256>>}, session(Next)) || Next rem 2 =:= 0],
                [Next];
            [] ->
                []
        end,
    ok = nif_session_cache:update(Store, {Other, <<New:256>>}, session(New + 10000)),
    ok = nif_session_cache:update(Store, {PK, <<(New + 1000):256>>}, session(New + 1000)),
    {More, Deleted1} =
        case nif_session_cache_nif:next(Cursor) of
            {NextItems, NextCursor} -> drive(Store, PK, Other, NextItems, NextCursor, Items ++ Out, New + 1)
        end,
    {More, Deleted ++ Deleted1}.

foldl_passes_key_session_pairs_and_accumulates(Config) ->
    Role = ?config(role, Config),
    Store = nif_session_cache:init([{role, Role}]),
    Entries = [{key(Role, N), session(N)} || N <- lists:seq(1, 500)],
    [ok = nif_session_cache:update(Store, K, S) || {K, S} <- Entries],
    Seen = nif_session_cache:foldl(fun({K, S}, Acc) -> [{K, S} | Acc] end, [], Store),
    ?assertEqual(lists:sort(Entries), lists:sort(Seen)),
    ?assertEqual(lists:sum(lists:seq(1, 500)),
                 nif_session_cache:foldl(fun({_, {session, N, _}}, Acc) -> Acc + N end, 0, Store)).

foldl_on_an_empty_store_returns_acc0(Config) ->
    Store = nif_session_cache:init([{role, ?config(role, Config)}]),
    Acc0 = make_ref(),
    ?assertEqual(Acc0, nif_session_cache:foldl(fun(_, _) -> error(called) end, Acc0, Store)).

foldl_tolerates_deletes_from_the_fun(Config) ->
    %% OTP's client validator deletes expired sessions (through ssl_manager) while it folds.
    Role = ?config(role, Config),
    Store = nif_session_cache:init([{role, Role}]),
    [ok = nif_session_cache:update(Store, key(Role, N), session(N)) || N <- lists:seq(1, 1000)],
    Visited = nif_session_cache:foldl(
                fun({K, {session, N, _}}, Acc) when N rem 2 =:= 0 ->
                        ok = nif_session_cache:delete(Store, K),
                        Acc + 1;
                   (_, Acc) ->
                        Acc + 1
                end, 0, Store),
    ?assertEqual(1000, Visited),
    ?assertEqual(500, nif_session_cache:size(Store)).

junk_keys_on_read_paths_find_nothing(Config) ->
    Role = ?config(role, Config),
    Store = nif_session_cache:init([{role, Role}]),
    ok = nif_session_cache:update(Store, key(Role, 1), session(1)),
    Deep = lists:foldl(fun(_, Acc) -> {Acc} end, x, lists:seq(1, 10000)),
    Junk = [#{}, #{a => 1}, fun() -> ok end, <<1:3>>, Deep, [1, 2 | 3], binary:copy(<<0>>, 1 bsl 20),
            lists:seq(1, 100000), self(), make_ref(), 1 bsl 300, 1.5, [], {}, <<>>, {{"h", 1}},
            {{"h", 1}, <<1:256>>, extra}, key(Role, 2), atom],
    [begin
         ?assertEqual(undefined, nif_session_cache:lookup(Store, J)),
         ?assertEqual([], nif_session_cache:select_session(Store, J)),
         ?assertEqual(ok, nif_session_cache:delete(Store, J))
     end || J <- Junk],
    ?assertEqual(session(1), nif_session_cache:lookup(Store, key(Role, 1))),
    ?assertEqual(1, nif_session_cache:size(Store)).

writes_from_a_foreign_process_raise_and_change_nothing(Config) ->
    Role = ?config(role, Config),
    Store = nif_session_cache:init([{role, Role}]),
    K = key(Role, 1),
    ok = nif_session_cache:update(Store, K, session(1)),
    Results = in_other_process(
                fun() ->
                        [catch_error(fun() -> nif_session_cache:update(Store, K, session(2)) end),
                         catch_error(fun() -> nif_session_cache:update(Store, key(Role, 2), session(2)) end),
                         catch_error(fun() -> nif_session_cache:delete(Store, K) end),
                         catch_error(fun() -> nif_session_cache:terminate(Store) end)]
                end),
    ?assertEqual(lists:duplicate(4, {error, {badarg, not_owner}}), Results),
    ?assertEqual(session(1), nif_session_cache:lookup(Store, K)),
    ?assertEqual(1, nif_session_cache:size(Store)),
    ?assertEqual(false, maps:get(terminated, nif_session_cache:info(Store))).

reads_from_a_foreign_process_work(Config) ->
    Role = ?config(role, Config),
    Store = nif_session_cache:init([{role, Role}]),
    [ok = nif_session_cache:update(Store, key(Role, N), session(N)) || N <- lists:seq(1, 100)],
    ok = nif_session_cache:update(Store, {partial(Role), <<100000:256>>}, session(7)),
    Results = in_other_process(
                fun() ->
                        {nif_session_cache:lookup(Store, key(Role, 5)),
                         nif_session_cache:size(Store),
                         nif_session_cache:foldl(fun(_, Acc) -> Acc + 1 end, 0, Store),
                         lists:member(session(7), nif_session_cache:select_session(Store, partial(Role)))}
                end),
    ?assertEqual({session(5), 101, 101, true}, Results).

terminate_releases_the_store(Config) ->
    Role = ?config(role, Config),
    Store = nif_session_cache:init([{role, Role}]),
    [ok = nif_session_cache:update(Store, key(Role, N), session(N)) || N <- lists:seq(1, 2000)],
    ?assert(maps:get(bytes, nif_session_cache:info(Store)) > 0),
    ?assertEqual(ok, nif_session_cache:terminate(Store)),
    #{entries := 0, bytes := 0, terminated := true} = nif_session_cache:info(Store),
    ?assertEqual(0, nif_session_cache:size(Store)),
    ?assertEqual(undefined, nif_session_cache:lookup(Store, key(Role, 1))),
    ?assertEqual([], nif_session_cache:select_session(Store, partial(Role))),
    ?assertEqual(acc, nif_session_cache:foldl(fun(_, _) -> error(called) end, acc, Store)),
    ?assertEqual({error, {badarg, terminated}},
                 catch_error(fun() -> nif_session_cache:update(Store, key(Role, 1), session(1)) end)),
    ?assertEqual(ok, nif_session_cache:terminate(Store)).

%%% Helpers

%% The key shape each role really uses: a bare 32-byte id on the server, {{Host, Port}, Id} on the client.
key(server, N) -> <<N:256>>;
key(client, N) -> {partial(client), <<N:256>>}.

partial(client) -> {"client.example", 443};
partial(server) -> {"server.example", 443}.

session(N) ->
    {session, N, <<N:384>>}.

%% A #session{}-shaped term: ids, a 48-byte master secret, a DER-sized certificate, a private key tuple.
realistic_session() ->
    {session, <<1:256>>, crypto:strong_rand_bytes(48), crypto:strong_rand_bytes(1200),
     [crypto:strong_rand_bytes(900)], {'RSAPrivateKey', 'two-prime', 1 bsl 2047 + 1, 65537},
     {tls_cipher, 16#c02f}, erlang:monotonic_time(), true, undefined}.
