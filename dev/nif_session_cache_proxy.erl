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
            ok = relay(Client, Port),
            accept(Port, Listen);
        {error, closed} ->
            ok
    end.

%% Joins Client to a new connection to the current target. A client that has already gone (a busy machine may
%% keep it waiting past its timeout), or a target that refuses, costs that connection only, never the proxy.
relay(Client, Port) ->
    Options = [binary, {active, false}, {nodelay, true}],
    case gen_tcp:connect({127, 0, 0, 1}, persistent_term:get({?MODULE, Port}), Options) of
        {ok, Server} ->
            Up = fun(From, To) -> spawn(fun() -> receive go -> pump(From, To) end end) end,
            Pumps = [Up(Client, Server), Up(Server, Client)],
            Owners = lists:zip([Client, Server], Pumps),
            Steps = [fun() -> inet:setopts(Client, [{nodelay, true}]) end
                     | [fun() -> gen_tcp:controlling_process(S, P) end || {S, P} <- Owners]],
            case lists:all(fun(Step) -> Step() =:= ok end, Steps) of
                true ->
                    [P ! go || P <- Pumps],
                    ok;
                false ->
                    [exit(P, kill) || P <- Pumps],
                    ok = gen_tcp:close(Server),
                    gen_tcp:close(Client)
            end;
        {error, _} ->
            gen_tcp:close(Client)
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
