%%% The main job: real TLS 1.2 connections on loopback resuming through nif_session_cache, beside the same run
%%% through OTP's default stores, with a short report. `make demo` runs main/0.
%%%
%%% Each run restarts ssl with its session_cb, opens one listener, then makes a series of client connections:
%%% a first full handshake, resumptions, and a few connections with {reuse_sessions, false} that force full
%%% handshakes (the listener stores each of those sessions; the client stores none). Resumption is detected the
%%% way every release allows for TLS 1.2 (OTP 25's connection_information never reports it): the session id of a
%%% connection equals that of an earlier one.
-module(nif_session_cache_demo).

-export([main/0, run/1, run/2, tls_options/0, start_listener/2, connect/3, wait_until/2, restart_ssl/1]).
%% The reconnect storm's steps, for the bench's cluster section and the failover suite.
-export([offer/3, full_session/3, pmap/2]).

-include_lib("public_key/include/public_key.hrl").

-type backend() :: default | nif_session_cache.
-type report() :: #{backend := backend(),
                    connections := non_neg_integer(),
                    resumed := non_neg_integer(),
                    full_handshake_us := non_neg_integer(),
                    resumed_handshake_us := non_neg_integer(),
                    client_store := non_neg_integer(),
                    listener_store := non_neg_integer()}.
-export_type([backend/0, report/0]).

-define(RESUMES, 40).
-define(FRESH, 5).

%% Runs both backends, prints the report, and halts the VM with status 0 only if our cache resumed sessions.
-spec main() -> no_return().
main() ->
    Reports = [run(default), run(nif_session_cache)],
    print(Reports),
    [_, Ours] = Reports,
    Ok = maps:get(resumed, Ours) > 0,
    Ok orelse io:format("~nFAILED: no connection resumed through nif_session_cache~n"),
    erlang:halt(case Ok of true -> 0; false -> 1 end).

-spec run(backend()) -> report().
run(Backend) ->
    run(Backend, #{}).

%% Options: resumes (default 40) and fresh (default 5) connection counts.
-spec run(backend(), map()) -> report().
run(Backend, Options) ->
    Resumes = maps:get(resumes, Options, ?RESUMES),
    Fresh = maps:get(fresh, Options, ?FRESH),
    restart_ssl(Backend),
    {ServerOpts, ClientOpts} = tls_options(),
    {Listener, Port} = start_listener(ServerOpts, []),
    try
        {FirstId, FullUs} = connect(Port, ClientOpts, []),
        %% Both caches register a session asynchronously after the handshake.
        ok = wait_until(fun() -> client_store(Backend) >= 1 andalso listener_store(Backend) >= 1 end, 2000),
        Resumed = [connect(Port, ClientOpts, []) || _ <- lists:seq(1, Resumes)],
        Fresh1 = [connect(Port, ClientOpts, [{reuse_sessions, false}]) || _ <- lists:seq(1, Fresh)],
        ok = wait_until(fun() -> listener_store(Backend) =:= 1 + Fresh end, 2000),
        #{backend => Backend,
          connections => 1 + Resumes + Fresh,
          resumed => length([Id || {Id, _} <- Resumed, Id =:= FirstId]),
          full_handshake_us => median([FullUs | [Us || {_, Us} <- Fresh1]]),
          resumed_handshake_us => median([Us || {_, Us} <- Resumed]),
          client_store => client_store(Backend),
          listener_store => listener_store(Backend)}
    after
        ssl:close(Listener)
    end.

%% Server and client options from a generated CA, for "localhost", forcing TLS 1.2 and verify_peer (without
%% which an OTP client never caches a session).
-spec tls_options() -> {[ssl:tls_server_option()], [ssl:tls_client_option()]}.
tls_options() ->
    SAN = #'Extension'{extnID = ?'id-ce-subjectAltName', critical = false,
                       extnValue = [{dNSName, "localhost"}]},
    %% SHA-256 signatures: pkix_test_data/1 signs with SHA-1 by default, which TLS 1.2 refuses since OTP 26.
    Sha256 = {digest, sha256},
    #{server_config := Server, client_config := Client} =
        public_key:pkix_test_data(#{server_chain => #{root => [Sha256], intermediates => [],
                                                      peer => [Sha256, {extensions, [SAN]}]},
                                    client_chain => #{root => [Sha256], intermediates => [], peer => [Sha256]}}),
    Common = [{versions, ['tlsv1.2']}, {active, false}],
    {Common ++ Server ++ [{reuseaddr, true}],
     Common ++ Client ++ [{verify, verify_peer}, {server_name_indication, "localhost"}]}.

%% A listener on a free loopback port whose acceptor handshakes every connection and holds it until the peer
%% closes. The acceptor dies with the listener.
-spec start_listener([ssl:tls_server_option()], [ssl:tls_server_option()]) -> {ssl:sslsocket(), inet:port_number()}.
start_listener(ServerOpts, Extra) ->
    {ok, Listener} = ssl:listen(0, [{ip, {127, 0, 0, 1}} | Extra ++ ServerOpts]),
    {ok, {_, Port}} = ssl:sockname(Listener),
    spawn_link(fun() -> accept_loop(Listener) end),
    {Listener, Port}.

%% One client connection: returns its session id and the handshake time in microseconds.
-spec connect(inet:port_number(), [ssl:tls_client_option()], [ssl:tls_client_option()]) -> {binary(), non_neg_integer()}.
connect(Port, ClientOpts, Extra) ->
    Start = erlang:monotonic_time(microsecond),
    %% 30 s, as the acceptor's handshake: a machine busy with other jobs once took more than 5 s for one.
    {ok, Socket} = ssl:connect("localhost", Port, Extra ++ ClientOpts, 30000),
    Us = erlang:monotonic_time(microsecond) - Start,
    {ok, [{session_id, Id}]} = ssl:connection_information(Socket, [session_id]),
    ok = ssl:close(Socket),
    {Id, Us}.

%% One connection to Port, offering the session {Id, Data} (OTP's {reuse_session, {Id, Data}}) or none: the
%% session it ended with, or why it failed.
-spec offer(inet:port_number(), [ssl:tls_client_option()], {binary(), binary()} | none) ->
          {ok, {binary(), binary()}} | {error, term()}.
offer(Port, ClientOpts, Resume) ->
    Extra = case Resume of none -> []; {_, _} -> [{reuse_session, Resume}] end,
    case ssl:connect({127, 0, 0, 1}, Port, Extra ++ ClientOpts, 30000) of
        {ok, Socket} ->
            {ok, [{session_id, Id}, {session_data, Data}]} =
                ssl:connection_information(Socket, [session_id, session_data]),
            ok = ssl:close(Socket),
            {ok, {Id, Data}};
        {error, Why} ->
            {error, Why}
    end.

%% A full handshake's session, tried up to Tries times (a busy machine may not finish one in the acceptor's time).
-spec full_session(inet:port_number(), [ssl:tls_client_option()], pos_integer()) -> {binary(), binary()}.
full_session(Port, ClientOpts, Tries) ->
    case offer(Port, ClientOpts, none) of
        {ok, Session} -> Session;
        {error, Why} when Tries =< 1 -> erlang:error({no_full_handshake, Why});
        {error, _} -> full_session(Port, ClientOpts, Tries - 1)
    end.

%% Fun over List by 8 processes, in List's order.
-spec pmap(fun((A) -> B), [A]) -> [B].
pmap(Fun, List) ->
    Chunks = [[X || {I, X} <- lists:enumerate(List), I rem 8 =:= K] || K <- lists:seq(0, 7)],
    Self = self(),
    Pids = [spawn_link(fun() -> Self ! {self(), [{X, Fun(X)} || X <- Chunk]} end) || Chunk <- Chunks],
    Results = maps:from_list(lists:append([receive {Pid, R} -> R end || Pid <- Pids])),
    [maps:get(X, Results) || X <- List].

%% Polls Check every 10 ms until it returns true, for at most TimeoutMs.
-spec wait_until(fun(() -> boolean()), non_neg_integer()) -> ok | timeout.
wait_until(Check, TimeoutMs) when TimeoutMs =< 0 ->
    case Check() of true -> ok; false -> timeout end;
wait_until(Check, TimeoutMs) ->
    case Check() of
        true -> ok;
        false -> timer:sleep(10), wait_until(Check, TimeoutMs - 10)
    end.

%%% Internal

accept_loop(Listener) ->
    case ssl:transport_accept(Listener) of
        {ok, Transport} ->
            Handler = spawn(fun() -> receive {go, Socket} -> hold(Socket) end end),
            case ssl:handshake(Transport, 30000) of
                {ok, Socket} ->
                    %% A client that only wanted the handshake may already have closed the connection.
                    case ssl:controlling_process(Socket, Handler) of
                        ok -> Handler ! {go, Socket}, ok;
                        {error, _} -> true = exit(Handler, kill), ok
                    end;
                {error, _} ->
                    true = exit(Handler, kill),
                    ok
            end,
            accept_loop(Listener);
        {error, _} ->
            %% The listener is gone: closed, or, when ssl itself stops under it, einval on OTP 29.
            ok
    end.

hold(Socket) ->
    _ = ssl:recv(Socket, 0),
    ssl:close(Socket).

%% Restarts ssl with Backend as session_cb (and client_session_cb / server_session_cb), or with OTP's defaults.
-spec restart_ssl(backend()) -> ok.
restart_ssl(Backend) ->
    _ = application:stop(ssl),
    Keys = [session_cb, client_session_cb, server_session_cb],
    _ = case Backend of
            default -> [application:unset_env(ssl, Key) || Key <- Keys];
            Module -> [application:set_env(ssl, Key, Module) || Key <- Keys]
        end,
    ok = ssl:start().

client_store(nif_session_cache) ->
    lists:sum([N || #{role := client, entries := N} <- nif_session_cache:stores()]);
client_store(default) ->
    %% OTP's client store, on 25, 27 and 29 alike: an ETS table owned by ssl_manager.
    Manager = whereis(ssl_manager),
    lists:sum([ets:info(T, size) || T <- ets:all(), ets:info(T, owner) =:= Manager,
                                    ets:info(T, name) =:= client_ssl_otp_session_cache]).

listener_store(nif_session_cache) ->
    lists:sum([N || #{role := server, entries := N} <- nif_session_cache:stores()]);
listener_store(default) ->
    %% OTP's listener store, on 25, 27 and 29 alike: a gb_tree in each listener cache process's state
    %% (#state.db, element 4 of ssl_server_session_cache's state). The demo only prints it.
    lists:sum([gb_trees:size(element(4, sys:get_state(Pid)))
               || {_, Pid, _, _} <- supervisor:which_children(ssl_server_session_cache_sup), is_pid(Pid)]).

median([]) -> 0;
median(Values) -> lists:nth((length(Values) + 1) div 2, lists:sort(Values)).

print(Reports) ->
    io:format("~nnif_session_cache demo: TLS 1.2 on loopback, one listener, one client~n~n"),
    Row = "~-20s ~11s ~8s ~15s ~16s ~13s ~15s~n",
    io:format(Row, ["store", "connections", "resumed", "full hs (us)", "resumed hs (us)",
                    "client store", "listener store"]),
    [io:format(Row, [label(B) | [integer_to_list(N) || N <- [C, R, F, Re, Cs, Ls]]])
     || #{backend := B, connections := C, resumed := R, full_handshake_us := F,
          resumed_handshake_us := Re, client_store := Cs, listener_store := Ls} <- Reports],
    io:format("~nHandshake times are medians. The listener store holds the first session plus one per "
              "{reuse_sessions, false} connection;~nthe client stores only the session it resumes.~n"),
    io:format("~nnif_session_cache stores alive now (nif_session_cache:stores()):~n"),
    [io:format("  ~p~n", [Info]) || Info <- nif_session_cache:stores()],
    ok.

label(default) -> "OTP default stores";
label(nif_session_cache) -> "nif_session_cache".
