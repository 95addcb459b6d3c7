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
         a_load_from_a_second_directory_with_old_code_purged_first_carries_every_store_over/1,
         a_load_from_a_second_directory_with_old_code_still_loaded_carries_every_store_over/1]).

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
     a_load_from_a_second_directory_with_old_code_purged_first_carries_every_store_over,
     a_load_from_a_second_directory_with_old_code_still_loaded_carries_every_store_over].

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
    [a_killed_listener_cache_frees_its_store, restarting_ssl_recreates_the_client_store_and_resumption_works].

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

%% A release upgrade loads the NIF library from a new version directory (lib/nif_session_cache-NEW/priv) while
%% listeners serve. Here an operator deletes and purges the old code first, so the new library loads afresh and
%% the stores made before are of a resource type it did not open. Everything carries over (upgrade_under_load/2).
a_load_from_a_second_directory_with_old_code_purged_first_carries_every_store_over(Config) ->
    upgrade_under_load(Config, purged).

%% The same with the old code still loaded when the new one loads, as release_handler's load_module instruction
%% does: the new library's upgrade callback runs, and takes the stores' resource type over.
a_load_from_a_second_directory_with_old_code_still_loaded_carries_every_store_over(Config) ->
    upgrade_under_load(Config, still_loaded).

%% Two listeners and the client store hold sessions; a store of 100 sessions has a fold and a select cursor in
%% flight; a process keeps making handshakes. The library is loaded from a second directory, then from the
%% first again. Across each load: no handshake fails, every session stored before still resumes in both roles,
%% new sessions resume, the fold and the cursor finish with every entry once, stores() lists every store, and
%% no cache process of OTP's restarts or logs an error (end_per_testcase).
upgrade_under_load(Config, Mode) ->
    {ListenerA, PortA} = listen(Config, []),
    {ListenerB, PortB} = listen(Config, []),
    Ports = [PortA, PortB],
    Before = [element(1, connect(Config, P, [])) || P <- Ports],
    ok = nif_session_cache_demo:wait_until(
           fun() -> entries(client) =:= [2] andalso entries(server) =:= [1, 1] end, 10000),
    Caches = lists:sort(listener_caches()),
    Old = filename:dirname(code:which(nif_session_cache)),
    Loop = handshake_loop(Config, Ports),
    try
        Listeners = [ListenerA, ListenerB],
        New = across_a_load(Config, Mode, Listeners, Before, fun() -> upgrade_from(?config(priv_dir, Config), Old, Mode) end),
        ?assertEqual(filename:join(filename:dirname(New), "priv"), code:priv_dir(nif_session_cache)),
        Back = across_a_load(Config, Mode, Listeners, Before, fun() -> upgrade_from(undefined, Old, Mode) end),
        ?assertEqual(Old, Back),
        %% Every handshake of the loop, before, during and after both loads, resumed a session made first.
        Handshakes = stop_handshake_loop(Loop),
        ?assertEqual([], [H || H <- Handshakes, not lists:member(H, [{ok, Id} || Id <- Before])]),
        ?assertEqual([], [P || P <- Caches, not is_process_alive(P)])
    after
        Loop ! stop,
        [ssl:close(L) || L <- [ListenerA, ListenerB]],
        code:which(nif_session_cache_nif) =:= filename:join(Old, "nif_session_cache_nif.beam")
            orelse upgrade_from(undefined, Old, purged)
    end.

%% Runs Load (which returns the ebin it loaded from) with a fold and a select cursor in flight and handshakes
%% going on, and checks everything a load must keep. Returns that ebin.
across_a_load(Config, Mode, Listeners, Before, Load) ->
    Ports = [element(2, element(2, ssl:sockname(L))) || L <- Listeners],
    Live = nif_session_cache:init([]),
    [ok = nif_session_cache:update(Live, {{"h", 1}, <<I:256>>}, {session, I}) || I <- lists:seq(1, 100)],
    {Folded, Next} = nif_session_cache_nif:fold(Live, 0),
    {Selected, Cursor} = nif_session_cache_nif:select(Live, {"h", 1}),
    ?assertEqual({64, 64}, {length(Folded), length(Selected)}),
    %% The stores made before the load: the client's, the two listeners' and this one.
    Ids = [Id || {ok, #{id := Id}} <- [nif_session_cache:client_store() | [nif_session_cache:listener_store(L) || L <- Listeners]]]
        ++ [maps:get(id, nif_session_cache:info(Live))],
    ?assertEqual(4, length(Ids)),
    Manager = whereis(ssl_manager),
    Count = handshakes_so_far(),
    Ebin = Load(),
    %% The library from that directory is the one mapped now (found by its real path: priv may be a link).
    Library = string:trim(os:cmd("readlink -f " ++ filename:join([filename:dirname(Ebin), "priv", "nif_session_cache_nif.so"]))),
    ?assertEqual([Library], [L || L <- mapped_libraries(), L =:= Library], mapped_libraries()),
    ?assertEqual(Mode =:= still_loaded, erlang:check_old_code(nif_session_cache_nif)),
    %% The handshakes went on while the library loaded, and go on after.
    ok = nif_session_cache_demo:wait_until(fun() -> handshakes_so_far() >= Count + 4 end, 20000),
    ?assertEqual(lists:seq(1, 100), lists:sort([I || {{_, <<I:256>>}, _} <- fold_rest(Live, Next, Folded)])),
    ?assertEqual(lists:seq(1, 100), lists:sort([I || {session, I} <- drain(nif_session_cache_nif:next(Cursor), Selected)])),
    ?assertEqual(100, nif_session_cache:size(Live)),
    %% Sessions made before the first load resume, each through both roles' stores made before it: the client store
    %% holds only those, so a resumption is of one of them.
    ?assertEqual([{Id, true} || Id <- Before], [resumed(Config, P, Id) || {P, Id} <- lists:zip(Ports, Before)]),
    %% A session made now on a listener whose store was made before the load, and one on a listener opened now,
    %% resume. The client is given them as {Id, Data}, so that its store keeps only the sessions made first.
    {ListenerC, PortC} = listen(Config, []),
    [begin
         {Id, Data} = session(Config, P, []),
         Resumes = fun() -> element(1, session(Config, P, [{reuse_session, {Id, Data}}])) =:= Id end,
         ok = nif_session_cache_demo:wait_until(Resumes, 10000)
     end || P <- [hd(Ports), PortC]],
    ok = ssl:close(ListenerC),
    %% Every store made before the load is still listed, with one made after it.
    After = nif_session_cache:init([]),
    Listed = [Id || #{id := Id} <- nif_session_cache:stores()],
    ?assertEqual([], (Ids ++ [maps:get(id, nif_session_cache:info(After))]) -- Listed),
    ?assertEqual(Manager, whereis(ssl_manager)),
    ok = nif_session_cache:terminate(Live),
    ok = nif_session_cache:terminate(After),
    Ebin.

%%% Helpers

%% Loads nif_session_cache_nif, and with it the NIF library, from a copy of the application's ebin and priv under
%% Dir, as a release upgrade does (or from Back when Dir is undefined). purged: the old code is deleted and purged
%% first; still_loaded: it stays, as release_handler's load_module leaves it (after a soft purge of any older
%% code, which load_module also does). Returns the ebin.
upgrade_from(undefined, Back, Mode) ->
    true = code:replace_path(nif_session_cache, Back),
    reload_nif_module(Mode),
    Back;
upgrade_from(Dir, Old, Mode) ->
    %% A directory no earlier case used: a library that is mapped must never be written over.
    App = filename:join([Dir, integer_to_list(erlang:unique_integer([positive])), "nif_session_cache-2.0.0"]),
    [begin
         ok = filelib:ensure_path(filename:join(App, Sub)),
         From = filename:join(filename:dirname(Old), Sub),
         [{ok, _} = file:copy(filename:join(From, F), filename:join([App, Sub, F]))
          || F <- element(2, file:list_dir(From)), filelib:is_regular(filename:join(From, F))]
     end || Sub <- ["ebin", "priv"]],
    New = filename:join(App, "ebin"),
    true = code:replace_path(nif_session_cache, New),
    reload_nif_module(Mode),
    New.

%% purged: between the purge and the load the module is gone, and a handshake's call loads it (the shell's code
%% path loads on demand), so ensure_loaded, not load_file: a load_file racing that load is lost by OTP's code
%% server, and its caller waits forever.
reload_nif_module(purged) ->
    true = code:delete(nif_session_cache_nif),
    _ = code:purge(nif_session_cache_nif),
    {module, nif_session_cache_nif} = code:ensure_loaded(nif_session_cache_nif),
    ok;
reload_nif_module(still_loaded) ->
    true = code:soft_purge(nif_session_cache_nif),
    {module, nif_session_cache_nif} = code:load_file(nif_session_cache_nif),
    ok.

%% A process that makes handshakes on Ports in turn until stopped, each resuming what the client store offers;
%% it records each outcome.
handshake_loop(Config, Ports) ->
    Parent = self(),
    put(handshakes, counters:new(1, [])),
    Counter = get(handshakes),
    spawn_link(fun() -> handshake_loop(Config, Ports, Parent, Counter, []) end).

handshake_loop(Config, [Port | _] = Ports, Parent, Counter, Done) ->
    receive
        stop -> Parent ! {handshakes, lists:reverse(Done)}
    after 0 ->
            Outcome = try connect(Config, Port, []) of
                          {Id, _} -> {ok, Id}
                      catch
                          Class:Reason -> {error, {Class, Reason}}
                      end,
            counters:add(Counter, 1, 1),
            handshake_loop(Config, tl(Ports) ++ [Port], Parent, Counter, [Outcome | Done])
    end.

handshakes_so_far() ->
    counters:get(get(handshakes), 1).

stop_handshake_loop(Loop) ->
    Loop ! stop,
    receive {handshakes, Done} -> Done after 30000 -> ct:fail(handshake_loop_stuck) end.

%% A connection with {reuse_sessions, false}, which leaves the client store alone: its session as {Id, Data}.
session(Config, Port, Extra) ->
    {ok, Socket} = ssl:connect("localhost", Port, Extra ++ [{reuse_sessions, false} | ?config(client_opts, Config)], 5000),
    {ok, [{session_id, Id}, {session_data, Data}]} = ssl:connection_information(Socket, [session_id, session_data]),
    ok = ssl:close(Socket),
    {Id, Data}.

mapped_libraries() ->
    {ok, Maps} = file:read_file("/proc/self/maps"),
    lists:usort([binary_to_list(lists:last(binary:split(L, <<" ">>, [global, trim_all])))
                 || L <- binary:split(Maps, <<"\n">>, [global, trim_all]), binary:match(L, <<".so">>) =/= nomatch]).

fold_rest(_Store, done, Acc) -> Acc;
fold_rest(Store, From, Acc) ->
    {Items, Next} = case nif_session_cache_nif:fold(Store, From) of
                        dirty -> nif_session_cache_nif:fold_dirty(Store, From);
                        Chunk -> Chunk
                    end,
    fold_rest(Store, Next, Items ++ Acc).

drain({Items, done}, Acc) -> Items ++ Acc;
drain({Items, Cursor}, Acc) -> drain(nif_session_cache_nif:next(Cursor), Items ++ Acc).


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
