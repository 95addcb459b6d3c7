%%% Helpers of the suites that run the shared level across real nodes: peer nodes (OTP's peer module) with a TLS
%%% 1.2 listener each, whose store has {shared, Opts} in server_session_cb_init_args; a TCP proxy in the test node
%%% standing in for a load balancer (nif_session_cache_proxy); and clients in the test node. The functions under
%%% "On the peer nodes" run there.
-module(nif_session_cache_nodes).

-include_lib("common_test/include/ct.hrl").

-export([start_node/0, start_node/1, listen/3, shared_infos/1, shared_of/1, await_published/2, full_handshake/2,
         resume/3, through_proxy/3, caches/1, no_cache_restarted/1, redis_url/1, redis_url/2]).
%% On the peer nodes.
-export([listener/2, server_session/1, shared_info/0, listener_caches/0, log_to/1]).

%% A peer node with this library's code, not linked to the caller (init_per_suite runs in a process of its own,
%% which ends before the cases). With a log file, everything it logs at info level and above also goes there.
start_node() ->
    start_node(none).

start_node(LogFile) ->
    Paths = lists:append([["-pa", filename:dirname(code:which(M))]
                          || M <- [nif_session_cache, nif_session_cache_demo, ?MODULE]]),
    {ok, Peer, _} = peer:start(#{connection => standard_io, args => Paths}),
    [ok = peer:call(Peer, ?MODULE, log_to, [LogFile]) || LogFile =/= none],
    Peer.

%% A listener on Peer whose store has Shared; its port.
listen(Peer, Config, Shared) ->
    peer:call(Peer, ?MODULE, listener, [?config(server_opts, Config), Shared], 10000).

%% The shared maps of a node's listener stores, oldest first, and of its newest.
shared_infos(Peer) ->
    peer:call(Peer, ?MODULE, shared_info, []).

shared_of(Peer) ->
    lists:last(shared_infos(Peer)).

await_published(Peer, N) ->
    nif_session_cache_demo:wait_until(fun() -> maps:get(sets, shared_of(Peer)) >= N end, 20000).

%% A full handshake through the proxy to Port, saved for later resumption; its session id.
full_handshake(Config, Port) ->
    {Id, _} = through_proxy(Config, Port, [{reuse_sessions, save}]),
    Id.

%% A handshake offering Id through the proxy to Port: the id it ended with, and whether that is Id.
resume(Config, Port, Id) ->
    {Got, _} = through_proxy(Config, Port, [{reuse_session, Id}]),
    {Got, Got =:= Id}.

through_proxy(Config, Port, Extra) ->
    ok = nif_session_cache_proxy:target(?config(proxy, Config), Port),
    nif_session_cache_demo:connect(?config(proxy, Config), ?config(client_opts, Config), Extra).

%% The listener cache processes of each of Peers, to check after a case that none restarted.
caches(Peers) ->
    [{Peer, peer:call(Peer, ?MODULE, listener_caches, [])} || Peer <- Peers].

%% No listener cache process of any node restarted since caches/1: each still has the pid it had.
no_cache_restarted(Before) ->
    [[] = [P || P <- Pids, not lists:member(P, peer:call(Peer, ?MODULE, listener_caches, []))]
     || {Peer, Pids} <- Before],
    ok.

redis_url(Port) ->
    redis_url("redis", Port).

redis_url(Scheme, Port) ->
    iolist_to_binary(io_lib:format("~s://127.0.0.1:~b/", [Scheme, Port])).

%%% On the peer nodes

%% A listener whose store has Shared, on a free loopback port, held by a process of its own.
listener(ServerOpts, Shared) ->
    [ok = application:set_env(ssl, K, nif_session_cache) || K <- [session_cb, client_session_cb, server_session_cb]],
    [ok = application:set_env(ssl, K, [{shared, Shared}]) || K <- [session_cb_init_args, server_session_cb_init_args]],
    {ok, _} = application:ensure_all_started(ssl),
    Self = self(),
    spawn(fun() ->
                  %% A backlog for storms of clients: the acceptor takes one handshake at a time.
                  {_Listener, Port} = nif_session_cache_demo:start_listener(ServerOpts, [{backlog, 1024}]),
                  Self ! {port, Port},
                  receive stop -> ok end
          end),
    receive {port, Port} -> Port after 5000 -> error(no_listener) end.

%% The session a listener of this node stored under Id.
server_session(Id) ->
    hd([S || Store <- listener_stores(), S <- [nif_session_cache:lookup(Store, Id)], is_tuple(S)]).

%% info/1's shared map of every listener store of this node with a shared level, oldest first.
shared_info() ->
    Infos = lists:sort([{Id, Shared} || S <- listener_stores(), #{id := Id, shared := Shared} <- [info(S)]]),
    [Shared || {_, Shared} <- Infos].

listener_caches() ->
    try supervisor:which_children(ssl_server_session_cache_sup) of
        Children -> [Pid || {_, Pid, _, _} <- Children, is_pid(Pid)]
    catch
        exit:{noproc, _} -> [] % ssl is not started yet
    end.

%% Everything this node logs at info level and above, crash reports included, also goes to File.
log_to(File) ->
    ok = logger:set_primary_config(level, info),
    ok = logger:add_handler(file_log, logger_std_h, #{level => info, config => #{file => File}}).

listener_stores() ->
    [S || Pid <- listener_caches(), S <- tuple_to_list(sys:get_state(Pid)), is_map_key(shared, info(S))].

info(S) ->
    try nif_session_cache:info(S) catch error:badarg -> #{} end.
