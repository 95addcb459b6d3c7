%%% Real TLS 1.2 handshakes on loopback with ssl's session_cb set to nif_session_cache: resumption in both roles,
%%% isolation of listeners, OTP's own eviction at small maxima, and no crash or restart of OTP's cache processes.
-module(nif_session_cache_tls_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2, end_per_testcase/2]).
-export([log/2]).
-export([sessions_resume_through_our_cache_in_both_roles/1,
         a_listeners_store_and_the_client_store_are_found_by_their_sockets/1,
         client_reuse_sessions_false_means_no_resumption/1,
         server_reuse_sessions_false_means_no_resumption/1,
         two_listeners_are_isolated/1,
         otp_eviction_keeps_the_stores_at_max_and_resumption_works/1,
         explicit_reuse_session_resumes_that_id/1,
         a_closed_listener_frees_its_store/1,
         a_killed_listener_cache_frees_its_store/1,
         restarting_ssl_recreates_the_client_store_and_resumption_works/1,
         after_an_upgrade_from_a_second_directory_an_ssl_restart_resumes_again/1]).

all() ->
    [sessions_resume_through_our_cache_in_both_roles,
     a_listeners_store_and_the_client_store_are_found_by_their_sockets,
     client_reuse_sessions_false_means_no_resumption,
     server_reuse_sessions_false_means_no_resumption,
     two_listeners_are_isolated,
     otp_eviction_keeps_the_stores_at_max_and_resumption_works,
     explicit_reuse_session_resumes_that_id,
     a_closed_listener_frees_its_store,
     a_killed_listener_cache_frees_its_store,
     restarting_ssl_recreates_the_client_store_and_resumption_works,
     after_an_upgrade_from_a_second_directory_an_ssl_restart_resumes_again].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(crypto),
    {Server, Client} = nif_session_cache_demo:tls_options(),
    [{server_opts, Server}, {client_opts, Client} | Config].

end_per_suite(_Config) ->
    _ = application:stop(ssl),
    [application:unset_env(ssl, K) || K <- env_keys()],
    ok.

init_per_testcase(Case, Config) ->
    _ = application:stop(ssl),
    Max = case Case of
              otp_eviction_keeps_the_stores_at_max_and_resumption_works -> 3;
              _ -> 1000
          end,
    [ok = application:set_env(ssl, K, nif_session_cache) || K <- [session_cb, client_session_cb, server_session_cb]],
    ok = application:set_env(ssl, session_cache_client_max, Max),
    ok = application:set_env(ssl, session_cache_server_max, Max),
    ok = ssl:start(),
    %% Every error-level log event (a crashed cache process reports one) is forwarded to this process.
    ok = logger:add_handler(?MODULE, ?MODULE, #{level => error, config => #{pid => self()}}),
    [{manager, whereis(ssl_manager)} | Config].

end_per_testcase(Case, Config) ->
    _ = logger:remove_handler(?MODULE),
    Errors = errors_logged(),
    case lists:member(Case, faults()) of
        true ->
            ok; % these cases kill or restart OTP's processes on purpose
        false ->
            ?assertEqual(?config(manager, Config), whereis(ssl_manager), "ssl_manager restarted"),
            ?assertEqual([], Errors)
    end.

faults() ->
    [a_killed_listener_cache_frees_its_store, restarting_ssl_recreates_the_client_store_and_resumption_works,
     after_an_upgrade_from_a_second_directory_an_ssl_restart_resumes_again].

%% logger handler callback.
log(Event, #{config := #{pid := Pid}}) ->
    Pid ! {logged_error, maps:with([level, msg, meta], Event)}.

%%% Cases

sessions_resume_through_our_cache_in_both_roles(Config) ->
    {Listener, Port} = listen(Config, []),
    {Id, _} = connect(Config, Port, []),
    ok = await_stores(1, 1),
    Caches = listener_caches(),
    ?assertEqual([{Id, true}, {Id, true}], [resumed(Config, Port, Id) || _ <- [1, 2]]),
    %% The sessions live in our stores, under the keys OTP uses in each role.
    [#{role := client, entries := 1}] = stores(client),
    [#{role := server, entries := 1}] = stores(server),
    ?assertEqual(Caches, [P || P <- listener_caches(), is_process_alive(P)]),
    ssl:close(Listener).

%% An operator finds a listener's store by its listen socket, and the client store, without reading OTP's state.
a_listeners_store_and_the_client_store_are_found_by_their_sockets(Config) ->
    {ListenerA, PortA} = listen(Config, []),
    {ListenerB, _PortB} = listen(Config, []),
    {_Id, _} = connect(Config, PortA, []),
    %% Each end registers its session with a cast after the handshake.
    Registered = fun() -> [element(1, S) || S <- [nif_session_cache:listener_store(ListenerA), nif_session_cache:client_store()],
                                            element(1, S) =:= ok, maps:get(entries, element(2, S)) =:= 1] =:= [ok, ok]
                 end,
    ok = nif_session_cache_demo:wait_until(Registered, 10000),
    {ok, #{id := A, role := server, entries := 1}} = nif_session_cache:listener_store(ListenerA),
    {ok, #{id := B, role := server, entries := 0}} = nif_session_cache:listener_store(ListenerB),
    ?assertNotEqual(A, B),
    ?assertMatch({ok, #{role := client, entries := 1}}, nif_session_cache:client_store()),
    ?assertEqual({error, not_found}, nif_session_cache:listener_store(make_ref())),
    [ssl:close(L) || L <- [ListenerA, ListenerB]].

client_reuse_sessions_false_means_no_resumption(Config) ->
    {Listener, Port} = listen(Config, []),
    {Id, _} = connect(Config, Port, []),
    ok = await_stores(1, 1),
    {Id2, _} = connect(Config, Port, [{reuse_sessions, false}]),
    ?assertNotEqual(Id, Id2),
    ssl:close(Listener).

server_reuse_sessions_false_means_no_resumption(Config) ->
    {Listener, Port} = listen(Config, [{reuse_sessions, false}]),
    {Id, _} = connect(Config, Port, []),
    ok = await_client_entries(1),
    {Id2, _} = connect(Config, Port, []),
    ?assertNotEqual(Id, Id2),
    ?assertEqual([0], [N || #{entries := N} <- stores(server)]),
    ssl:close(Listener).

two_listeners_are_isolated(Config) ->
    {ListenerA, PortA} = listen(Config, []),
    {IdA, _} = connect(Config, PortA, []),
    ok = await_stores(1, 1),
    {ListenerB, PortB} = listen(Config, []),
    %% Offer A's session id to B: B's store has never seen it, so B makes a new session, and registering
    %% that session is B's store's first insert (OTP crashes there if size/1 counts entries it did not make).
    {IdB, _} = connect(Config, PortB, [{reuse_session, IdA}]),
    ?assertNotEqual(IdA, IdB),
    ok = nif_session_cache_demo:wait_until(fun() -> lists:sort([N || #{entries := N} <- stores(server)]) =:= [1, 1] end, 2000),
    ?assertEqual({IdB, true}, resumed(Config, PortB, IdB)),
    ?assertEqual({IdA, true}, resumed(Config, PortA, IdA)),
    ?assertEqual(2, length(listener_caches())),
    [ssl:close(L) || L <- [ListenerA, ListenerB]].

otp_eviction_keeps_the_stores_at_max_and_resumption_works(Config) ->
    %% session_cache_client_max and session_cache_server_max are 3 here. {reuse_sessions, save} makes the
    %% client do a full handshake and save every session, so both stores fill, then OTP evicts its oldest.
    {Listener, Port} = listen(Config, []),
    Ids = [element(1, connect(Config, Port, [{reuse_sessions, save}])) || _ <- lists:seq(1, 8)],
    ?assertEqual(8, length(lists:usort(Ids))),
    ok = nif_session_cache_demo:wait_until(fun() -> entries(client) =:= [3] andalso entries(server) =:= [3] end, 2000),
    timer:sleep(100),
    ?assertEqual({[3], [3]}, {entries(client), entries(server)}),
    {Id, _} = connect(Config, Port, []),
    ?assert(lists:member(Id, lists:nthtail(5, Ids)), "resumed one of the three newest sessions"),
    ?assertEqual(1, length(listener_caches())),
    ssl:close(Listener).

explicit_reuse_session_resumes_that_id(Config) ->
    {Listener, Port} = listen(Config, []),
    [{First, _}, {Second, _}] = [connect(Config, Port, [{reuse_sessions, save}]) || _ <- [1, 2]],
    ok = await_stores(2, 2),
    ?assertEqual({First, true}, resumed(Config, Port, First, [{reuse_session, First}])),
    ?assertEqual({Second, true}, resumed(Config, Port, Second, [{reuse_session, Second}])),
    ssl:close(Listener).

a_closed_listener_frees_its_store(Config) ->
    {Listener, Port} = listen(Config, []),
    _ = connect(Config, Port, []),
    ok = await_stores(1, 1),
    [Cache] = listener_caches(),
    Ref = monitor(process, Cache),
    ok = ssl:close(Listener),
    receive {'DOWN', Ref, process, Cache, _} -> ok after 5000 -> ct:fail(listener_cache_still_alive) end,
    %% OTP never calls terminate for a listener's store: it is freed when its last reference is collected.
    ok = nif_session_cache_demo:wait_until(fun() -> erlang:garbage_collect(), stores(server) =:= [] end, 5000).

a_killed_listener_cache_frees_its_store(Config) ->
    {Listener, Port} = listen(Config, []),
    _ = connect(Config, Port, []),
    ok = await_stores(1, 1),
    [#{id := Id}] = stores(server),
    [Cache] = listener_caches(),
    Ref = monitor(process, Cache),
    exit(Cache, kill),
    receive {'DOWN', Ref, process, Cache, killed} -> ok after 5000 -> ct:fail(cache_survived_kill) end,
    ok = nif_session_cache_demo:wait_until(
           fun() -> erlang:garbage_collect(), not lists:member(Id, [I || #{id := I} <- nif_session_cache:stores()]) end, 5000),
    ssl:close(Listener).

restarting_ssl_recreates_the_client_store_and_resumption_works(Config) ->
    {Listener, Port} = listen(Config, []),
    _ = connect(Config, Port, []),
    ok = await_stores(1, 1),
    [#{id := OldClient}] = stores(client),
    ok = ssl:close(Listener),
    ok = application:stop(ssl),
    %% ssl_manager terminates its client store on the way down: the store is emptied and then collected.
    ok = nif_session_cache_demo:wait_until(
           fun() ->
                   erlang:garbage_collect(),
                   [T || #{id := I, terminated := T} <- nif_session_cache:stores(), I =:= OldClient, not T] =:= []
           end, 5000),
    ok = ssl:start(),
    [#{id := NewClient, entries := 0}] = [S || #{terminated := false} = S <- stores(client)],
    ?assertNotEqual(OldClient, NewClient),
    {Listener2, Port2} = listen(Config, []),
    {Id, _} = connect(Config, Port2, []),
    ok = await_stores(1, 1),
    ?assertEqual({Id, true}, resumed(Config, Port2, Id)),
    ssl:close(Listener2).

%% A release upgrade loads the NIF library from a new version directory. Stores made by the old library are not
%% carried over (README, Caveats): calls on them, a fold in progress among them, raise badarg, and the new
%% library lists none of them. What README tells users to do then, restart ssl and reopen the listeners, makes
%% every store anew and resumption works again at once.
after_an_upgrade_from_a_second_directory_an_ssl_restart_resumes_again(Config) ->
    {Listener, Port} = listen(Config, []),
    {Id0, _} = connect(Config, Port, []),
    ok = await_stores(1, 1),
    ?assertEqual({Id0, true}, resumed(Config, Port, Id0)),
    Live = nif_session_cache:init([]),
    [ok = nif_session_cache:update(Live, {{"h", 1}, <<I:256>>}, {session, I}) || I <- lists:seq(1, 100)],
    {FirstChunk, Next} = nif_session_cache_nif:fold(Live, 0),
    ?assertEqual(64, length(FirstChunk)),
    Old = filename:dirname(code:which(nif_session_cache)),
    New = upgrade_from(?config(priv_dir, Config), Old),
    try
        ?assertEqual(filename:join(filename:dirname(New), "priv"), code:priv_dir(nif_session_cache)),
        ?assertError(badarg, nif_session_cache:size(Live)),
        ?assertError(badarg, nif_session_cache_nif:fold(Live, Next)),
        ?assertEqual([], [S || #{id := _} = S <- nif_session_cache:stores()]),
        ok = ssl:close(Listener),
        ok = application:stop(ssl),
        ok = ssl:start(),
        {Listener2, Port2} = listen(Config, []),
        {Id, _} = connect(Config, Port2, []),
        ok = await_stores(1, 1),
        ?assertEqual({Id, true}, resumed(Config, Port2, Id)),
        ok = ssl:close(Listener2)
    after
        upgrade_from(undefined, Old)
    end.

%%% Helpers

%% Loads nif_session_cache_nif, and with it the NIF library, from a copy of the application's ebin and priv
%% under Dir, as a release upgrade does (or from Back, undone, when Dir is undefined). Returns the ebin.
upgrade_from(undefined, Back) ->
    true = code:replace_path(nif_session_cache, Back),
    reload_nif_module(),
    Back;
upgrade_from(Dir, Old) ->
    App = filename:join(Dir, "nif_session_cache-2.0.0"),
    [begin
         ok = filelib:ensure_path(filename:join(App, Sub)),
         From = filename:join(filename:dirname(Old), Sub),
         [{ok, _} = file:copy(filename:join(From, F), filename:join([App, Sub, F]))
          || F <- element(2, file:list_dir(From)), filelib:is_regular(filename:join(From, F))]
     end || Sub <- ["ebin", "priv"]],
    New = filename:join(App, "ebin"),
    true = code:replace_path(nif_session_cache, New),
    reload_nif_module(),
    New.

reload_nif_module() ->
    true = code:delete(nif_session_cache_nif),
    _ = code:purge(nif_session_cache_nif),
    {module, nif_session_cache_nif} = code:load_file(nif_session_cache_nif),
    ok.

env_keys() ->
    [session_cb, client_session_cb, server_session_cb, session_cache_client_max, session_cache_server_max].

listen(Config, Extra) ->
    nif_session_cache_demo:start_listener(?config(server_opts, Config), Extra).

connect(Config, Port, Extra) ->
    nif_session_cache_demo:connect(Port, ?config(client_opts, Config), Extra).

resumed(Config, Port, Id) ->
    resumed(Config, Port, Id, []).

resumed(Config, Port, Id, Extra) ->
    {Got, _} = connect(Config, Port, Extra),
    {Got, Got =:= Id}.

stores(Role) ->
    [S || #{role := R, terminated := false} = S <- nif_session_cache:stores(), R =:= Role].

entries(Role) ->
    [N || #{entries := N} <- stores(Role)].

%% Registration is an asynchronous cast in both roles: wait for it.
await_stores(Client, Server) ->
    nif_session_cache_demo:wait_until(fun() -> entries(client) =:= [Client] andalso entries(server) =:= [Server] end, 10000).

await_client_entries(N) ->
    nif_session_cache_demo:wait_until(fun() -> entries(client) =:= [N] end, 10000).

listener_caches() ->
    [Pid || {_, Pid, _, _} <- supervisor:which_children(ssl_server_session_cache_sup), is_pid(Pid)].

errors_logged() ->
    receive {logged_error, Event} -> [Event | errors_logged()] after 0 -> [] end.
