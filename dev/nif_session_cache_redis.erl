%%% A redis-server of our own for the cluster suite and the benchmark's cluster section: on a free loopback port,
%%% without persistence, started and stopped here. Debian's redis-server, which scripts/setup.sh installs.
-module(nif_session_cache_redis).

-export([free_port/0, start/3, stop/1]).

%% A loopback port free at this moment.
-spec free_port() -> inet:port_number().
free_port() ->
    {ok, Socket} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}]),
    {ok, Port} = inet:port(Socket),
    ok = gen_tcp:close(Socket),
    Port.

%% Starts redis-server on Port with its files in Dir and Extra arguments, and waits until it answers PING.
-spec start(inet:port_number(), file:filename(), [string()]) -> port().
start(Port, Dir, Extra) ->
    ok = filelib:ensure_path(Dir),
    Exe = os:find_executable("redis-server"),
    Args = ["--port", integer_to_list(Port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", Dir | Extra],
    OsPort = open_port({spawn_executable, Exe}, [{args, Args}, exit_status, stderr_to_stdout]),
    ok = nif_session_cache_demo:wait_until(fun() -> ping(Port) end, 10000),
    OsPort.

%% Shuts the server on Port down, without saving, and waits until it no longer answers.
-spec stop(inet:port_number()) -> ok.
stop(Port) ->
    _ = os:cmd(io_lib:format("redis-cli -p ~b shutdown nosave 2>/dev/null", [Port])),
    ok = nif_session_cache_demo:wait_until(fun() -> not ping(Port) end, 5000).

ping(Port) ->
    case gen_tcp:connect({127, 0, 0, 1}, Port, [binary, {active, false}], 200) of
        {ok, S} ->
            ok = gen_tcp:send(S, <<"PING\r\n">>),
            R = gen_tcp:recv(S, 0, 500),
            ok = gen_tcp:close(S),
            R =:= {ok, <<"+PONG\r\n">>};
        {error, _} ->
            false
    end.
