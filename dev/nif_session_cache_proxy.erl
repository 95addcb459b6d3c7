%%% A TCP proxy on a free loopback port, standing in for a load balancer: the client sees one address, and each
%%% new connection goes to the port last set with target/2. For the cluster suite and the benchmark's cluster
%%% section: a TLS client offers a saved session only to the host and port it was made with, so two listeners
%%% can share sessions only behind one address.
-module(nif_session_cache_proxy).

-export([start/0, target/2]).

%% Starts a proxy and returns its port. It lives until the VM stops.
-spec start() -> inet:port_number().
start() ->
    {ok, Listen} = gen_tcp:listen(0, [binary, {active, false}, {ip, {127, 0, 0, 1}}, {reuseaddr, true}]),
    {ok, Port} = inet:port(Listen),
    Pid = spawn(fun() -> accept(Port, Listen) end),
    ok = gen_tcp:controlling_process(Listen, Pid),
    Port.

%% Sends the proxy's next connections to Target, a loopback port.
-spec target(inet:port_number(), inet:port_number()) -> ok.
target(Proxy, Target) ->
    persistent_term:put({?MODULE, Proxy}, Target).

accept(Port, Listen) ->
    case gen_tcp:accept(Listen) of
        {ok, Client} ->
            {ok, Server} = gen_tcp:connect({127, 0, 0, 1}, persistent_term:get({?MODULE, Port}),
                                           [binary, {active, false}, {nodelay, true}]),
            ok = inet:setopts(Client, [{nodelay, true}]),
            ok = gen_tcp:controlling_process(Client, spawn(fun() -> pump(Client, Server) end)),
            ok = gen_tcp:controlling_process(Server, spawn(fun() -> pump(Server, Client) end)),
            accept(Port, Listen);
        {error, closed} ->
            ok
    end.

pump(From, To) ->
    case gen_tcp:recv(From, 0) of
        {ok, Data} ->
            case gen_tcp:send(To, Data) of
                ok -> pump(From, To);
                {error, _} -> gen_tcp:close(From)
            end;
        {error, _} ->
            gen_tcp:close(To),
            gen_tcp:close(From)
    end.
