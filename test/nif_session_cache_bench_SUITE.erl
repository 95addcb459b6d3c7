%%% Smoke test of the benchmark: it runs at a tiny size and returns well-formed results. No timing is asserted:
%%% this machine is shared and noisy, and speed belongs to `make bench`, not to the test suite.
-module(nif_session_cache_bench_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1]).
-export([the_benchmark_runs_at_a_tiny_size_and_returns_well_formed_results/1,
         measure_times_only_the_operations_it_names/1,
         the_handshake_benchmark_resumes_every_session_in_every_setup/1,
         the_proxy_outlives_connections_it_cannot_relay/1,
         session_fields_are_found_by_value_on_this_release/1]).

-define(STORES, [nif_session_cache, ssl_client_session_cache_db, ssl_server_session_cache_db]).

all() ->
    [the_benchmark_runs_at_a_tiny_size_and_returns_well_formed_results, measure_times_only_the_operations_it_names,
     the_handshake_benchmark_resumes_every_session_in_every_setup, the_proxy_outlives_connections_it_cannot_relay,
     session_fields_are_found_by_value_on_this_release].

init_per_suite(Config) ->
    Config.

end_per_suite(_Config) ->
    _ = application:stop(ssl),
    ok.

the_benchmark_runs_at_a_tiny_size_and_returns_well_formed_results(Config) ->
    Out = filename:join(?config(priv_dir, Config), "bench"),
    R = nif_session_cache_bench:run(#{sizes => [50, 200], rounds => 1, ops => 100, hosts => 20, readers => [1, 2],
                                      monitor_size => 300, cluster => 40, storm => 20,
                                      scale => [100, 300], out => Out, print => false}),
    #{machine := Machine, session_etf_bytes := Etf, operations := Ops, concurrency := Conc, memory := Mem,
      scheduler := Sched, scale := Scale, cluster := Cluster} = R,
    %% The cluster section (a redis-server of its own): the storm with and without sharing, and TLS lookups.
    {storm, 20, NoSharing, Sharing} = lists:keyfind(storm, 1, Cluster),
    [?assert(is_float(F) andalso F >= 0 andalso F =< 1 andalso W > 0 andalso Cpu > 0)
     || #{resumed := F, wall_ms := W, cpu_s_per_reconnect := Cpu} <- [NoSharing, Sharing]],
    {tls_lookup_us, PlainP50, PlainP99, TlsP50, TlsP99} = lists:keyfind(tls_lookup_us, 1, Cluster),
    ?assert(PlainP50 > 0 andalso PlainP99 >= PlainP50 andalso TlsP50 > 0 andalso TlsP99 >= TlsP50),
    ?assert(is_list(Machine) andalso Etf > 1000),
    %% Both of OTP's key shapes, each at every size.
    ?assertEqual([{client, 50}, {client, 200}, {server, 50}, {server, 200}],
                 [{K, S} || #{keys := K, size := S} <- Ops]),
    [begin
         ?assertEqual([lookup_hit, lookup_miss, size, select_session, foldl, update_replace, update_new, delete],
                      [Op || {Op, _} <- Rows]),
         ?assertEqual(n_a, proplists:get_value(ssl_server_session_cache_db, proplists:get_value(select_session, Rows)))
     end || #{keys := client, rows := Rows} <- Ops],
    %% A bare session id has no partial key: OTP never calls select_session on a server store.
    [?assertEqual([lookup_hit, lookup_miss, size, foldl, update_replace, update_new, delete], [Op || {Op, _} <- Rows])
     || #{keys := server, rows := Rows} <- Ops],
    [begin
         [?assertEqual(?STORES, [M || {M, _} <- Row]) || {_, Row} <- Rows],
         [?assert(is_number(T) andalso T > 0) || {_, Row} <- Rows, {_, T} <- Row, T =/= n_a]
     end || #{rows := Rows} <- Ops],
    %% Page faults per operation beside every time, where the OS counts them (/proc/self/stat).
    Counted = filelib:is_regular("/proc/self/stat"),
    [?assertEqual([{Op, [{M, is_number(T) andalso Counted} || {M, T} <- Row]} || {Op, Row} <- Rows],
                  [{Op, [{M, is_number(F) andalso F >= 0} || {M, F} <- Row]} || {Op, Row} <- Faults])
     || #{rows := Rows, faults := Faults} <- Ops],
    #{rows := ConcRows} = Conc,
    ?assertEqual([1, 2], [N || {N, _} <- ConcRows]),
    #{stores := MemRows} = Mem,
    ?assertEqual(?STORES, [M || {M, _} <- MemRows]),
    [?assert(Reported > 0) || {_, {_Measured, Reported}} <- MemRows],
    %% Our store alone at each scale, with both figures of memory and both lookups.
    ?assertEqual([100, 300], [N || {N, _} <- Scale]),
    [?assert(M > 0 andalso Rep > 0 andalso H > 0 andalso Miss > 0)
     || {_, #{measured_bytes := M, reported_bytes := Rep, lookup_hit_ns := H, lookup_miss_ns := Miss}} <- Scale],
    #{steps := Steps, huge := Huge} = Sched,
    ?assertEqual([foldl, select_session_5000, terminate, drop_last_reference], [S || {S, _, _} <- Steps]),
    %% Every huge session of the suite, through every call, with times and the store's accounting.
    ?assertEqual([K || {K, _} <- nif_session_cache_sessions:huge()], [K || {K, _, _} <- Huge]),
    [?assertEqual([update, lookup, foldl, select_session, replace, delete], [Op || {Op, _} <- Times])
     || {_, Times, _} <- Huge],
    [?assert(L =< B andalso D > 0) || {_, _, #{largest_call := L, budget := B, dirty_calls := D}} <- Huge],
    {ok, Svg} = file:read_file(filename:join(Out, "chart.svg")),
    ?assertMatch(<<"<svg", _/binary>>, Svg),
    {ok, [Saved]} = file:consult(filename:join(Out, "results.term")),
    ?assertEqual(R, Saved).

measure_times_only_the_operations_it_names(Config) ->
    Out = filename:join(?config(priv_dir, Config), "bench_measure"),
    #{operations := [#{keys := server, rows := Rows}]} =
        nif_session_cache_bench:run(#{sizes => [100], keys => [server], measure => [delete, update_new], rounds => 1,
                                      ops => 50, hosts => 10, readers => [1], monitor_size => 0, scale => [], cluster => 0,
                                      out => Out, print => false}),
    %% In the benchmark's own order, whatever the order asked; the chart is still drawn without the others.
    ?assertEqual([update_new, delete], [Op || {Op, _} <- Rows]),
    [?assertEqual(?STORES, [M || {M, _} <- Row]) || {_, Row} <- Rows],
    ?assertMatch({ok, <<"<svg", _/binary>>}, file:read_file(filename:join(Out, "chart.svg"))).

%% The headline benchmark at a tiny size: in every setup and at every size each handshake it counts as resumed
%% was resumed, none failed, and every lookup straight to the cache process found its filled session; with
%% reuse_sessions off, none resumed.
the_handshake_benchmark_resumes_every_session_in_every_setup(Config) ->
    Out = filename:join(?config(priv_dir, Config), "bench_handshakes"),
    R = nif_session_cache_bench_handshakes:run(#{sizes => [0, 300], clients => 2, handshakes => 40, rounds => 2,
                                                 lookups => 60, churn => 500, out => Out, print => false}),
    #{cells := Cells, floor := [#{size := 300, tree_words := Words}]} = R,
    ?assertEqual([{default, 0}, {nif_session_cache, 0}, {off, 0}, {default, 300}, {nif_session_cache, 300}],
                 [{S, N} || #{setup := S, size := N} <- Cells]),
    %% Two rounds of two clients, 10 handshakes each: one full to start, then four resumed to one full.
    [?assertMatch(#{resumed := #{count := 32}, full := #{count := 8}, refused := 0, failed := 0}, Hs)
     || #{setup := S, handshakes := Hs} <- Cells, S =/= off],
    [?assertMatch(#{resumed := #{count := 0}, full := #{count := 8}, refused := 32, failed := 0}, Hs)
     || #{setup := off, handshakes := Hs} <- Cells],
    [?assertMatch(#{found := 60, total := 60}, L) || #{size := 300, lookups := L} <- Cells],
    [?assertMatch(#{registrations := 500}, C) || #{size := 300, churn := C} <- Cells],
    ?assert(Words > 300),
    ?assertMatch({ok, <<"<svg", _/binary>>}, file:read_file(filename:join(Out, "handshakes.svg"))),
    ?assertEqual({ok, [R]}, file:consult(filename:join(Out, "handshakes.term"))).

%% The load balancer of the cluster section and suite (dev/nif_session_cache_proxy.erl): a connection it cannot relay
%% (its target refuses, or the client has gone) is closed, and the next is relayed.
the_proxy_outlives_connections_it_cannot_relay(_Config) ->
    Proxy = nif_session_cache_proxy:start(),
    {ok, Closed} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}]),
    {ok, Refusing} = inet:port(Closed),
    ok = gen_tcp:close(Closed),
    ok = nif_session_cache_proxy:target(Proxy, Refusing),
    Options = [binary, {active, false}, {ip, {127, 0, 0, 1}}],
    {ok, Refused} = gen_tcp:connect({127, 0, 0, 1}, Proxy, Options),
    ?assertEqual({error, closed}, gen_tcp:recv(Refused, 0, 5000)),
    {ok, Echo} = gen_tcp:listen(0, [binary, {active, false}, {ip, {127, 0, 0, 1}}]),
    {ok, EchoPort} = inet:port(Echo),
    ok = nif_session_cache_proxy:target(Proxy, EchoPort),
    {ok, Client} = gen_tcp:connect({127, 0, 0, 1}, Proxy, Options),
    {ok, Server} = gen_tcp:accept(Echo, 5000),
    ok = gen_tcp:send(Client, <<"through">>),
    ?assertEqual({ok, <<"through">>}, gen_tcp:recv(Server, 0, 5000)),
    [gen_tcp:close(S) || S <- [Client, Server, Echo, Refused]].

%% The benchmark's and the tests' sessions are this release's #session{}, with fields found by value
%% (dev/nif_session_cache_sessions.erl): five distinct places, each holding what its name says, and a field found
%% in two places is an error rather than a guess.
session_fields_are_found_by_value_on_this_release(_Config) ->
    #{client := Client, server := Server, layout := Layout, known := Known} = nif_session_cache_sessions:capture(),
    #{session_id := IdAt, peer_certificate := PeerAt, own_certificates := OwnAt, private_key := KeyAt,
      master_secret := SecretAt} = Layout,
    ?assertEqual(5, length(lists:usort(maps:values(Layout)))),
    ?assertEqual(session, element(1, Server)),
    ?assertEqual(32, byte_size(element(IdAt, Server))),
    ?assertMatch(<<_:48/binary>>, element(SecretAt, Client)),
    ?assertEqual(element(SecretAt, Client), element(SecretAt, Server)),
    ?assertEqual([element(PeerAt, Client)], element(OwnAt, Server)),
    ?assert(is_tuple(element(KeyAt, Server))),
    %% Made from the layout: fresh ids and secrets where the layout says, the rest as captured.
    [{Id, Made}] = nif_session_cache_sessions:sessions({Server, Layout}, 1),
    ?assertEqual(Id, element(IdAt, Made)),
    ?assertNotEqual(element(SecretAt, Server), element(SecretAt, Made)),
    ?assertEqual(element(OwnAt, Server), element(OwnAt, Made)),
    %% Copies that hold the same 48-byte binary in a second place leave the master secret ambiguous.
    [Spare | _] = lists:seq(2, tuple_size(Server)) -- maps:values(Layout),
    Twice = fun(S) -> setelement(Spare, S, element(SecretAt, Server)) end,
    ?assertError({session_layout, master_secret, [_, _]},
                 nif_session_cache_sessions:layout({Twice(Client), Twice(Server)}, Known)).
