%%% Redis servers of our own for the cluster suite and the benchmark's cluster section: on free loopback ports,
%%% without persistence, started and stopped here. Debian's redis-server (scripts/setup.sh installs it), in clear,
%%% over TLS with certificates made by openssl for the run (pki/1), as a replica or as a sentinel.
-module(nif_session_cache_redis).

-export([free_port/0, start/3, start_tls/4, start_sentinel/3, stop/1, kill/1, calls/2, redis_cli/2, pki/1]).

-type pki() :: #{ca := file:filename(), server_cert := file:filename(), server_key := file:filename(),
                 client_cert := file:filename(), client_key := file:filename()}.
-export_type([pki/0]).

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
    OsPort = spawn_server(Port, Dir, ["--port", integer_to_list(Port) | Extra]),
    ok = nif_session_cache_demo:wait_until(fun() -> ping(Port) end, 10000),
    OsPort.

%% Starts a redis-server that speaks only TLS on Port, with Pki's server certificate; Clients asks for client
%% certificates (mutual TLS). Waits until it listens.
-spec start_tls(inet:port_number(), file:filename(), pki(), boolean()) -> port().
start_tls(Port, Dir, #{ca := Ca, server_cert := Cert, server_key := Key}, Clients) ->
    OsPort = spawn_server(Port, Dir, ["--port", "0", "--tls-port", integer_to_list(Port), "--tls-cert-file", Cert,
                                "--tls-key-file", Key, "--tls-ca-cert-file", Ca,
                                "--tls-auth-clients", atom_to_list(yes_no(Clients))]),
    ok = nif_session_cache_demo:wait_until(fun() -> listening(Port) end, 10000),
    OsPort.

%% Starts a sentinel on Port watching the master on MasterPort as mymaster, quorum 2, a master down after one
%% second unanswered, with its config file in Dir.
-spec start_sentinel(inet:port_number(), file:filename(), inet:port_number()) -> port().
start_sentinel(Port, Dir, MasterPort) ->
    ok = filelib:ensure_path(Dir),
    Conf = filename:join(Dir, "sentinel.conf"),
    ok = file:write_file(Conf, io_lib:format("port ~b~nbind 127.0.0.1~ndir ~s~n"
                                             "sentinel monitor mymaster 127.0.0.1 ~b 2~n"
                                             "sentinel down-after-milliseconds mymaster 1000~n"
                                             "sentinel failover-timeout mymaster 3000~n", [Port, Dir, MasterPort])),
    OsPort = run(Port, Dir, [Conf, "--sentinel"]),
    ok = nif_session_cache_demo:wait_until(fun() -> ping(Port) end, 10000),
    OsPort.

spawn_server(Port, Dir, Args) ->
    ok = filelib:ensure_path(Dir),
    run(Port, Dir, Args ++ ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", Dir]).

%% The server's OS pid is kept by its port number, for kill/1: the Erlang port closes when the process that
%% opened it ends (an init_per_suite's does), and the OS process lives on.
run(Port, Dir, Args) ->
    Exe = os:find_executable("redis-server"),
    OsPort = open_port({spawn_executable, Exe}, [{args, Args}, {cd, Dir}, exit_status, stderr_to_stdout]),
    {os_pid, Pid} = erlang:port_info(OsPort, os_pid),
    persistent_term:put({?MODULE, Port}, Pid),
    OsPort.

%% Shuts the server on Port down, without saving, and waits until it no longer answers.
-spec stop(inet:port_number()) -> ok.
stop(Port) ->
    _ = redis_cli(Port, "shutdown nosave"),
    ok = nif_session_cache_demo:wait_until(fun() -> not ping(Port) end, 5000).

%% Kills the server started here on Port (as a crash would), and waits until it no longer listens.
-spec kill(inet:port_number()) -> ok.
kill(Port) ->
    case persistent_term:get({?MODULE, Port}, undefined) of
        undefined -> ok;
        Pid -> _ = os:cmd("kill -9 " ++ integer_to_list(Pid)), _ = persistent_term:erase({?MODULE, Port})
    end,
    ok = nif_session_cache_demo:wait_until(fun() -> not listening(Port) end, 5000).

%% The calls of Command (lower case) the plain server on Port has served since it started (INFO commandstats).
-spec calls(inet:port_number(), string()) -> non_neg_integer().
calls(Port, Command) ->
    Info = redis_cli(Port, "info commandstats"),
    case re:run(Info, "cmdstat_" ++ Command ++ ":calls=([0-9]+)", [{capture, all_but_first, list}]) of
        {match, [N]} -> list_to_integer(N);
        nomatch -> 0
    end.

%% redis-cli's answer to Args (a string) from the plain server on Port.
-spec redis_cli(inet:port_number(), string()) -> string().
redis_cli(Port, Args) ->
    os:cmd(io_lib:format("redis-cli -p ~b ~s 2>/dev/null", [Port, Args])).

%% A certificate authority made with openssl in Dir, a server certificate signed by it for 127.0.0.1 and
%% localhost, and a client certificate: PEM files, EC P-256 keys in PKCS#8.
-spec pki(file:filename()) -> pki().
pki(Dir) ->
    ok = filelib:ensure_path(filename:join(Dir, "x")),
    Run = fun(Args) ->
                  Out = os:cmd(lists:flatten(["cd '", Dir, "' && openssl ", Args, " 2>&1 && echo OPENSSL_OK"])),
                  [erlang:error({openssl, Args, Out}) || string:find(Out, "OPENSSL_OK") =:= nomatch],
                  ok
          end,
    Ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes",
    Run(["req -x509 ", Ec, " -keyout ca.key -out ca.pem -days 2 -subj '/CN=nif_session_cache test CA' "
         "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign"]),
    [begin
         ok = file:write_file(filename:join(Dir, Who ++ ".ext"), Ext),
         Run(["req ", Ec, " -keyout ", Who, ".key -out ", Who, ".csr -subj /CN=", Who]),
         Run(["x509 -req -in ", Who, ".csr -CA ca.pem -CAkey ca.key -CAcreateserial -out ", Who,
              ".pem -days 2 -extfile ", Who, ".ext"])
     end || {Who, Ext} <- [{"server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"},
                           {"client", "extendedKeyUsage=clientAuth\n"}]],
    File = fun(Name) -> filename:join(Dir, Name) end,
    #{ca => File("ca.pem"), server_cert => File("server.pem"), server_key => File("server.key"),
      client_cert => File("client.pem"), client_key => File("client.key")}.

yes_no(true) -> yes;
yes_no(false) -> no.

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

listening(Port) ->
    case gen_tcp:connect({127, 0, 0, 1}, Port, [binary, {active, false}], 200) of
        {ok, S} -> gen_tcp:close(S), true;
        {error, _} -> false
    end.
