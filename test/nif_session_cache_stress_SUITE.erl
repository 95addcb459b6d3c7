%%% Concurrency, secret hygiene and leaks: the owner writes while readers and a fold run, with zero mismatched
%%% reads; copies handed out are never touched when the store wipes its own; a million insert/delete cycles
%%% and ten thousand stores leave nothing behind.
-module(nif_session_cache_stress_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0]).
-export([readers_and_a_fold_never_see_a_mismatched_value_while_the_owner_writes/1,
         copies_handed_out_survive_delete_replace_and_terminate/1,
         readers_copying_shared_fields_and_keeping_certificates_while_the_owner_replaces_and_deletes/1,
         a_million_insert_delete_cycles_leave_no_bytes/1]).

-define(WRITE_MS, 3000).
-define(HOSTS, 40).
-define(IDS, 1500).

all() ->
    [readers_and_a_fold_never_see_a_mismatched_value_while_the_owner_writes,
     copies_handed_out_survive_delete_replace_and_terminate,
     readers_copying_shared_fields_and_keeping_certificates_while_the_owner_replaces_and_deletes,
     a_million_insert_delete_cycles_leave_no_bytes].

%%% Cases

readers_and_a_fold_never_see_a_mismatched_value_while_the_owner_writes(_Config) ->
    Store = nif_session_cache:init([{role, client}]),
    Parent = self(),
    Readers = [spawn_link(fun() -> reader(Parent, Store, 0, 0) end) || _ <- lists:seq(1, 3)],
    Folder = spawn_link(fun() -> folder(Parent, Store, 0, 0) end),
    Model = write_for(Store, #{}, erlang:monotonic_time(millisecond) + ?WRITE_MS, 0),
    Results = [begin P ! stop, receive {P, Checked, Bad} -> {Checked, Bad} end end || P <- [Folder | Readers]],
    ct:pal("reads checked and mismatches per process: ~p; final entries: ~B", [Results, map_size(Model)]),
    ?assertEqual([0], lists:usort([Bad || {_, Bad} <- Results])),
    ?assert(lists:all(fun({Checked, _}) -> Checked > 0 end, Results)),
    ?assertEqual(map_size(Model), nif_session_cache:size(Store)),
    ?assertEqual(lists:sort(maps:to_list(Model)),
                 lists:sort(nif_session_cache:foldl(fun(E, Acc) -> [E | Acc] end, [], Store))).

copies_handed_out_survive_delete_replace_and_terminate(_Config) ->
    %% The secret is a 48-byte sub-binary of a larger reference-counted binary, as OTP's own may be: a store
    %% that wiped it in place would corrupt the big binary and every copy of it.
    Big = crypto:strong_rand_bytes(4096),
    BigBefore = binary:copy(Big),
    <<_:100/binary, Secret:48/binary, _/binary>> = Big,
    Session = {session, <<7:256>>, Secret, binary:part(Big, 200, 1200), [Big]},
    Expected = {session, <<7:256>>, binary:copy(Secret), binary:copy(binary:part(Big, 200, 1200)), [BigBefore]},
    Store = nif_session_cache:init([{role, server}]),
    ok = nif_session_cache:update(Store, <<7:256>>, Session),
    First = nif_session_cache:lookup(Store, <<7:256>>),
    ok = nif_session_cache:update(Store, <<7:256>>, Session), % replace: the first entry is wiped
    Second = nif_session_cache:lookup(Store, <<7:256>>),
    ok = nif_session_cache:delete(Store, <<7:256>>), % delete: the second entry is wiped
    ok = nif_session_cache:update(Store, <<8:256>>, Session),
    Third = nif_session_cache:lookup(Store, <<8:256>>),
    ok = nif_session_cache:terminate(Store), % terminate: the third entry is wiped
    [?assert(Copy =:= Expected) || Copy <- [First, Second, Third, Session]],
    ?assert(Big =:= BigBefore).

%% The paths OTP-shaped sessions take, under concurrency: every session shares one certificate chain and one
%% private key term (held once by the store, copied out by every lookup), and has its own 1.2 KB peer certificate
%% (handed out by reference into the entry's bytes). Readers check every field of what they read and keep the
%% peer certificates; the owner replaces and deletes meanwhile, then empties the store. Every kept certificate
%% must still hold its bytes afterwards.
readers_copying_shared_fields_and_keeping_certificates_while_the_owner_replaces_and_deletes(_Config) ->
    Chain = [crypto:strong_rand_bytes(900), crypto:strong_rand_bytes(700)],
    PrivateKey = public_key:generate_key({rsa, 1024, 65537}),
    Shared = {Chain, PrivateKey},
    Store = nif_session_cache:init([{role, server}]),
    Ids = [<<I:256>> || I <- lists:seq(1, 200)],
    [ok = nif_session_cache:update(Store, Id, otp_shaped(Id, 0, Shared)) || Id <- Ids],
    Parent = self(),
    Readers = [spawn_link(fun() -> keeping_reader(Parent, Store, list_to_tuple(Ids), Shared, 0, 0, []) end)
               || _ <- lists:seq(1, 3)],
    churn(Store, list_to_tuple(Ids), Shared, erlang:monotonic_time(millisecond) + ?WRITE_MS, 1),
    Kept = [begin P ! stop, receive {P, Checked, Bad, K} -> {Checked, Bad, K} end end || P <- Readers],
    [ok = nif_session_cache:delete(Store, Id) || Id <- Ids],
    ?assertEqual(0, nif_session_cache:size(Store)),
    erlang:garbage_collect(),
    Certificates = lists:append([K || {_, _, K} <- Kept]),
    ct:pal("reads checked and mismatches per reader: ~p; certificates kept: ~B",
           [[{C, B} || {C, B, _} <- Kept], length(Certificates)]),
    ?assertEqual([0], lists:usort([B || {_, B, _} <- Kept])),
    ?assert(lists:all(fun({C, _, _}) -> C > 0 end, Kept)),
    ?assert(length(Certificates) > 0),
    ?assertEqual([], [{Id, V} || {Id, V, Peer} <- Certificates, Peer =/= peer_certificate(Id, V)]).

a_million_insert_delete_cycles_leave_no_bytes(_Config) ->
    Store = nif_session_cache:init([{role, client}]),
    Session = {session, <<1:256>>, crypto:strong_rand_bytes(48), crypto:strong_rand_bytes(1200)},
    erlang:garbage_collect(),
    Before = erlang:memory(total),
    cycles(Store, Session, 1000000),
    erlang:garbage_collect(),
    After = erlang:memory(total),
    #{entries := Entries, bytes := Bytes, inserts := Inserts, deletes := Deletes} = nif_session_cache:info(Store),
    ct:pal("after 1,000,000 insert/delete cycles: entries ~B, bytes ~B, VM memory grew by ~B bytes", [Entries, Bytes, After - Before]),
    ?assertEqual({0, 0}, {Entries, Bytes}),
    ?assertEqual({1000000, 1000000}, {Inserts, Deletes}),
    %% An entry that was never freed would leave its 1.3 KB behind a million times over: 1.3 GB. The bound
    %% leaves the allocators room to keep some carriers, and nothing more.
    ?assert(After - Before < 64 * 1024 * 1024).

%%% Helpers

%% A server session shaped like OTP's: id, peer certificate, the listener's chain and key, a secret, a version.
otp_shaped(Id, Version, {Chain, PrivateKey}) ->
    {session, Id, undefined, peer_certificate(Id, Version), Chain, PrivateKey, <<0, 47>>,
     crypto:hash(sha384, <<Id/binary, Version:64>>), Version}.

%% 1,200 bytes that name their session and version.
peer_certificate(Id, Version) ->
    binary:copy(<<Id/binary, Version:64>>, 30).

churn(Store, Ids, Shared, Deadline, Version) ->
    case Version rem 256 =:= 0 andalso erlang:monotonic_time(millisecond) >= Deadline of
        true ->
            ok;
        false ->
            Id = element(rand:uniform(tuple_size(Ids)), Ids),
            ok = case rand:uniform(3) of
                     1 -> nif_session_cache:delete(Store, Id);
                     _ -> nif_session_cache:update(Store, Id, otp_shaped(Id, Version, Shared))
                 end,
            churn(Store, Ids, Shared, Deadline, Version + 1)
    end.

%% Looks sessions up, checks each against what its id and version say it must hold, and keeps the peer
%% certificate of one read in 16 (a bounded number of them), with the id and version it must still match.
keeping_reader(Parent, Store, Ids, Shared, Checked, Bad, Kept) ->
    receive
        stop -> Parent ! {self(), Checked, Bad, Kept}
    after 0 ->
        Id = element(rand:uniform(tuple_size(Ids)), Ids),
        {Mismatch, Keep} =
            case nif_session_cache:lookup(Store, Id) of
                undefined ->
                    {0, []};
                {session, Id, _, Peer, _, _, _, _, Version} = Session ->
                    Intact = Session =:= otp_shaped(Id, Version, Shared),
                    {case Intact of true -> 0; false -> 1 end,
                     [{Id, Version, Peer} || Intact, rand:uniform(16) =:= 1, length(Kept) < 5000]};
                _ ->
                    {1, []}
            end,
        keeping_reader(Parent, Store, Ids, Shared, Checked + 1, Bad + Mismatch, Keep ++ Kept)
    end.

cycles(_, _, 0) -> ok;
cycles(Store, Session, N) ->
    Key = key(N rem ?IDS),
    ok = nif_session_cache:update(Store, Key, Session),
    ok = nif_session_cache:delete(Store, Key),
    cycles(Store, Session, N - 1).

%% Client keys over a few hosts, and bare server ids, in one store.
key(N) when N rem 3 =:= 0 -> <<N:256>>;
key(N) -> {{host(N rem ?HOSTS), 443}, <<N:256>>}.

host(H) -> "h" ++ integer_to_list(H) ++ ".example".

%% Every value names its key, so any reader can tell a value written for another key.
value(Key, Version) -> {session, Key, Version, crypto:strong_rand_bytes(48)}.

write_for(Store, Model, Deadline, Count) ->
    case Count rem 256 =:= 0 andalso erlang:monotonic_time(millisecond) >= Deadline of
        true -> Model;
        false ->
            Key = key(rand:uniform(?IDS) - 1),
            case rand:uniform(4) of
                1 ->
                    ok = nif_session_cache:delete(Store, Key),
                    write_for(Store, maps:remove(Key, Model), Deadline, Count + 1);
                _ ->
                    Value = value(Key, Count),
                    ok = nif_session_cache:update(Store, Key, Value),
                    write_for(Store, Model#{Key => Value}, Deadline, Count + 1)
            end
    end.

reader(Parent, Store, Checked, Bad) ->
    receive
        stop -> Parent ! {self(), Checked, Bad}
    after 0 ->
        Key = key(rand:uniform(?IDS) - 1),
        Mismatch = case nif_session_cache:lookup(Store, Key) of
                       undefined -> 0;
                       {session, Key, _, _} -> 0;
                       _ -> 1
                   end,
        Partial = {host(rand:uniform(?HOSTS) - 1), 443},
        Selected = nif_session_cache:select_session(Store, Partial),
        Foreign = length([S || S <- Selected, not in_group(S, Partial)]),
        reader(Parent, Store, Checked + 1 + length(Selected), Bad + Mismatch + Foreign)
    end.

in_group({session, {Partial, _}, _, _}, Partial) -> true;
in_group(_, _) -> false.

folder(Parent, Store, Checked, Bad) ->
    receive
        stop -> Parent ! {self(), Checked, Bad}
    after 0 ->
        {N, B} = nif_session_cache:foldl(fun({Key, {session, Key, _, _}}, {N, B}) -> {N + 1, B};
                                            (_, {N, B}) -> {N + 1, B + 1}
                                         end, {0, 0}, Store),
        folder(Parent, Store, Checked + N, Bad + B)
    end.
