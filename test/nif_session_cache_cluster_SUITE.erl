%%% The shared level, across real nodes and a real Redis. Two BEAM nodes (OTP's peer module) each run a TLS 1.2
%%% listener with our cache and {shared, Opts} in server_session_cb_init_args. A TCP proxy in this node stands in
%%% for a load balancer (nif_session_cache_proxy): the client sees one address and the test chooses the node behind it. The suite starts
%%% its own redis-server on a free loopback port without persistence (and a three-master Redis Cluster for one
%%% case), and stops them.
-module(nif_session_cache_cluster_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2, end_per_testcase/2]).
-export([a_session_made_on_one_node_resumes_on_the_other_both_ways/1,
         other_namespaces_and_wrong_keys_never_resume_and_never_crash/1,
         through_a_redis_cluster_sessions_resume_across_nodes/1,
         with_redis_down_nodes_work_alone_and_recover_when_it_returns/1,
         tampered_moved_and_unknown_key_blobs_are_misses/1,
         a_session_with_too_little_lifetime_left_is_not_returned/1,
         redis_never_holds_a_secret_in_clear/1,
         a_flood_of_unknown_ids_costs_at_most_the_read_rate/1,
         remote_bytes_make_no_atoms_and_odd_shapes_are_misses/1,
         bad_shared_options_fail_init_naming_the_option_not_the_value/1]).

all() ->
    [a_session_made_on_one_node_resumes_on_the_other_both_ways,
     other_namespaces_and_wrong_keys_never_resume_and_never_crash,
     through_a_redis_cluster_sessions_resume_across_nodes,
     with_redis_down_nodes_work_alone_and_recover_when_it_returns,
     tampered_moved_and_unknown_key_blobs_are_misses,
     a_session_with_too_little_lifetime_left_is_not_returned,
     redis_never_holds_a_secret_in_clear,
     a_flood_of_unknown_ids_costs_at_most_the_read_rate,
     remote_bytes_make_no_atoms_and_odd_shapes_are_misses,
     bad_shared_options_fail_init_naming_the_option_not_the_value].

-define(KEY, <<16#5eed:256>>).
-define(OTHER_KEY, <<16#0bad:256>>).

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(ssl),
    {Server, Client} = nif_session_cache_demo:tls_options(),
    RedisPort = nif_session_cache_redis:free_port(),
    _ = nif_session_cache_redis:start(RedisPort, ?config(priv_dir, Config), []),
    Proxy = nif_session_cache_proxy:start(),
    Nodes = [nif_session_cache_nodes:start_node() || _ <- [a, b]],
    [{server_opts, Server}, {client_opts, Client}, {redis_port, RedisPort}, {proxy, Proxy},
     {nodes, Nodes} | Config].

end_per_suite(Config) ->
    [peer:stop(Peer) || Peer <- ?config(nodes, Config)],
    nif_session_cache_redis:stop(?config(redis_port, Config)),
    ok.

init_per_testcase(_Case, Config) ->
    [{caches, nif_session_cache_nodes:caches(?config(nodes, Config))} | Config].

end_per_testcase(_Case, Config) ->
    %% No listener cache process of either node ever restarted: each still has the pid it had.
    nif_session_cache_nodes:no_cache_restarted(proplists:get_value(caches, Config, [])).

%%% Cases

a_session_made_on_one_node_resumes_on_the_other_both_ways(Config) ->
    [A, B] = ?config(nodes, Config),
    Shared = shared(Config, <<"fleet">>, [?KEY]),
    PortA = listen(A, Config, Shared),
    PortB = listen(B, Config, Shared),
    %% A makes the session; B resumes it.
    Id1 = full_handshake(Config, PortA),
    ok = await_published(A, 1),
    ?assertEqual({Id1, true}, resume(Config, PortB, Id1)),
    %% B makes one; A resumes it.
    Id2 = full_handshake(Config, PortB),
    ok = await_published(B, 1),
    ?assertEqual({Id2, true}, resume(Config, PortA, Id2)),
    %% Each node found the other's session in Redis, and kept none of them locally.
    [#{hits := HitsA}, #{hits := HitsB}] = [shared_of(Node) || Node <- [A, B]],
    ?assert(HitsA >= 1 andalso HitsB >= 1).

other_namespaces_and_wrong_keys_never_resume_and_never_crash(Config) ->
    [A, B] = ?config(nodes, Config),
    PortA = listen(A, Config, shared(Config, <<"ns-one">>, [?KEY])),
    PortOtherNs = listen(B, Config, shared(Config, <<"ns-two">>, [?KEY])),
    Id = full_handshake(Config, PortA),
    ok = await_published(A, 1),
    ?assertMatch({_, false}, resume(Config, PortOtherNs, Id)),
    PortWrongKey = listen(B, Config, shared(Config, <<"ns-one">>, [?OTHER_KEY])),
    ?assertMatch({_, false}, resume(Config, PortWrongKey, Id)),
    %% The wrong key found the blob and could not open it; the other namespace found nothing.
    [NsInfo, KeyInfo] = lists:nthtail(length(shared_infos(B)) - 2, shared_infos(B)),
    ?assertMatch(#{misses := #{unsealed := 1}, hits := 0}, KeyInfo),
    ?assertMatch(#{misses := #{absent := 1}, hits := 0}, NsInfo),
    _ = PortOtherNs, _ = PortWrongKey.

through_a_redis_cluster_sessions_resume_across_nodes(Config) ->
    [A, B] = ?config(nodes, Config),
    %% A cluster node also listens on its port + 10000, for the cluster bus.
    Ports = [cluster_port() || _ <- [1, 2, 3]],
    Dir = ?config(priv_dir, Config),
    Servers = [nif_session_cache_redis:start(P, filename:join(Dir, integer_to_list(P)),
                           ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]) || P <- Ports],
    try
        Create = os:cmd(lists:flatten(["redis-cli --cluster create ",
                                       [io_lib:format("127.0.0.1:~b ", [P]) || P <- Ports],
                                       "--cluster-replicas 0 --cluster-yes 2>&1"])),
        ?assertNotEqual(nomatch, string:find(Create, "All 16384 slots covered"), Create),
        ok = nif_session_cache_demo:wait_until(fun() -> cluster_ok(hd(Ports)) end, 10000),
        Urls = [iolist_to_binary(io_lib:format("redis://127.0.0.1:~b/", [P])) || P <- Ports],
        Shared = [{url, Urls}, {namespace, <<"cluster">>}, {keys, [?KEY]}],
        PortA = listen(A, Config, Shared),
        PortB = listen(B, Config, Shared),
        Ids = [full_handshake(Config, PortA) || _ <- lists:seq(1, 6)],
        ok = await_published(A, 6),
        ?assertEqual([{Id, true} || Id <- Ids], [resume(Config, PortB, Id) || Id <- Ids]),
        Id = full_handshake(Config, PortB),
        ok = await_published(B, 1),
        ?assertEqual({Id, true}, resume(Config, PortA, Id))
    after
        _ = Servers,
        [nif_session_cache_redis:stop(P) || P <- Ports]
    end.

with_redis_down_nodes_work_alone_and_recover_when_it_returns(Config) ->
    [A, B] = ?config(nodes, Config),
    Shared = [{breaker_threshold, 1}, {breaker_cool_down_ms, 200} | shared(Config, <<"faults">>, [?KEY])],
    PortA = listen(A, Config, Shared),
    PortB = listen(B, Config, Shared),
    Before = full_handshake(Config, PortA),
    ok = await_published(A, 1),
    nif_session_cache_redis:stop(?config(redis_port, Config)),
    try
        %% Local resumption goes on; a session of the other node costs a full handshake, without waiting for
        %% Redis: the refused connection is an error, not a timeout, and opens the breaker.
        ?assertEqual({Before, true}, resume(Config, PortA, Before)),
        ?assertMatch({_, false}, resume(Config, PortB, Before)),
        ?assertMatch(#{state := open, misses := #{error := E, timeout := 0}} when E >= 1, shared_of(B)),
        %% Redis down for a while: every cross-node attempt is refused without asking it.
        [?assertMatch({_, false}, resume(Config, PortB, Before)) || _ <- [1, 2, 3]],
        ?assertMatch(#{misses := #{breaker_open := N}} when N >= 1, shared_of(B))
    after
        nif_session_cache_redis:start(?config(redis_port, Config), ?config(priv_dir, Config), [])
    end,
    %% Redis is back (empty): new sessions are shared again once the breaker has let a probe through.
    timer:sleep(300),
    _ = resume(Config, PortB, Before),
    After = full_handshake(Config, PortA),
    ok = await_published(A, 2),
    ?assertEqual({After, true}, resume(Config, PortB, After)),
    ?assertMatch(#{state := closed}, shared_of(B)).

tampered_moved_and_unknown_key_blobs_are_misses(Config) ->
    Opts = shared(Config, <<"tamper">>, [?KEY]),
    Writer = nif_session_cache:init([{role, server}, {shared, Opts}]),
    Reader = nif_session_cache:init([{role, server}, {shared, Opts}]),
    Stranger = nif_session_cache:init([{role, server}, {shared, shared(Config, <<"tamper">>, [?OTHER_KEY])}]),
    [Id1, Id2, Id3, Id4] = [crypto:strong_rand_bytes(32) || _ <- [1, 2, 3, 4]],
    ok = nif_session_cache:update(Writer, Id1, fake_session(Id1, 0)),
    ok = nif_session_cache:update(Stranger, Id3, fake_session(Id3, 0)),
    ok = nif_session_cache_demo:wait_until(fun() -> redis_get(Config, <<"tamper">>, Id1) =/= undefined andalso
                                                        redis_get(Config, <<"tamper">>, Id3) =/= undefined end, 2000),
    %% Untouched, it comes back: rebased, without its private key. (Another store reads it: a store keeps what it
    %% read beside it, and would not ask Redis for it again.)
    Checker = nif_session_cache:init([{role, server}, {shared, Opts}]),
    ?assertMatch({session, Id1, {T, 7}, undefined, <<9:384>>, T}, nif_session_cache:lookup(Checker, Id1)),
    Blob = redis_get(Config, <<"tamper">>, Id1),
    %% A flipped byte.
    <<Head:40/binary, Byte, Tail/binary>> = Blob,
    ok = redis_set(Config, <<"tamper">>, Id1, <<Head/binary, (Byte bxor 1), Tail/binary>>),
    ?assertEqual(undefined, nif_session_cache:lookup(Reader, Id1)),
    %% The same blob under another id.
    ok = redis_set(Config, <<"tamper">>, Id2, Blob),
    ?assertEqual(undefined, nif_session_cache:lookup(Reader, Id2)),
    %% Sealed with a key the reader does not have.
    ?assertEqual(undefined, nif_session_cache:lookup(Reader, Id3)),
    %% Not a blob at all.
    ok = redis_set(Config, <<"tamper">>, Id4, <<"garbage">>),
    ?assertEqual(undefined, nif_session_cache:lookup(Reader, Id4)),
    ?assertMatch(#{shared := #{misses := #{unsealed := 4}, hits := 0}}, nif_session_cache:info(Reader)).

a_session_with_too_little_lifetime_left_is_not_returned(Config) ->
    Opts = [{margin_s, 60} | shared(Config, <<"lifetime">>, [?KEY])],
    Writer = nif_session_cache:init([{role, server}, {shared, Opts}]),
    Reader = nif_session_cache:init([{role, server}, {shared, Opts}]),
    Lifetime = 24 * 60 * 60,
    [Young, Old] = [crypto:strong_rand_bytes(32) || _ <- [1, 2]],
    ok = nif_session_cache:update(Writer, Young, fake_session(Young, Lifetime - 120)),
    ok = nif_session_cache:update(Writer, Old, fake_session(Old, Lifetime - 30)),
    ok = nif_session_cache_demo:wait_until(fun() -> redis_get(Config, <<"lifetime">>, Old) =/= undefined end, 10000),
    ?assertMatch({session, Young, _, _, _, _}, nif_session_cache:lookup(Reader, Young)),
    ?assertEqual(undefined, nif_session_cache:lookup(Reader, Old)),
    ?assertMatch(#{shared := #{misses := #{unusable := 1}}}, nif_session_cache:info(Reader)).

redis_never_holds_a_secret_in_clear(Config) ->
    [A, _B] = ?config(nodes, Config),
    Port = listen(A, Config, shared(Config, <<"clear">>, [?KEY])),
    Id = full_handshake(Config, Port),
    ok = await_published(A, 1),
    Session = peer:call(A, nif_session_cache_nodes, server_session, [Id]),
    [Secret] = [F || F <- tuple_to_list(Session), is_binary(F), byte_size(F) =:= 48],
    [Key] = [F || F <- tuple_to_list(Session), is_tuple(F),
                  lists:member(element(1, F), ['ECPrivateKey', 'RSAPrivateKey'])],
    KeyBytes = case Key of
                   %% The private scalar.
                   _ when element(1, Key) =:= 'ECPrivateKey' -> [element(3, Key)];
                   %% The private exponent, the primes, their exponents and the coefficient (not the modulus).
                   _ -> [binary:encode_unsigned(element(N, Key)) || N <- lists:seq(5, 10)]
               end,
    Values = [V || K <- redis(Config, [<<"KEYS">>, <<"*">>]), V <- [redis(Config, [<<"GET">>, K])], is_binary(V)],
    ?assert(length(Values) >= 1),
    [?assertEqual(nomatch, binary:match(V, [Secret | KeyBytes])) || V <- Values].

%% 2,000 lookups of random session ids, as a flood of made-up resumptions causes, in the owner's process: Redis
%% is asked at most max_reads_per_s times a second (in tenths of a second), the rest are refused at once.
a_flood_of_unknown_ids_costs_at_most_the_read_rate(Config) ->
    Store = nif_session_cache:init([{role, server},
                                    {shared, [{max_reads_per_s, 200} | shared(Config, <<"flood">>, [?KEY])]}]),
    Start = erlang:monotonic_time(millisecond),
    [undefined = nif_session_cache:lookup(Store, crypto:strong_rand_bytes(32)) || _ <- lists:seq(1, 2000)],
    Elapsed = erlang:monotonic_time(millisecond) - Start,
    #{shared := #{gets := 2000, misses := #{absent := Asked, busy := Refused}}} = nif_session_cache:info(Store),
    ?assertEqual(2000, Asked + Refused),
    %% 20 reads per tenth of a second, over however many tenths the flood lasted (one more for a partial one).
    ?assert(Asked =< 20 * (Elapsed div 100 + 2), {Asked, Elapsed}).

%% What the Erlang side accepts from Redis, once opened: only {Format, SslVsn, SystemNs, Session} of this node's
%% ssl version, naming the id looked up, with a time stamp next to its internal id; anything else is unusable,
%% and decoding never makes an atom.
remote_bytes_make_no_atoms_and_odd_shapes_are_misses(_Config) ->
    Id = crypto:strong_rand_bytes(32),
    {ok, Vsn} = application:get_key(ssl, vsn),
    Stamp = erlang:monotonic_time(),
    SystemNs = erlang:convert_time_unit(Stamp + erlang:time_offset(), native, nanosecond),
    Session = {session, Id, {Stamp, 7}, undefined, <<9:384>>, Stamp},
    Payload = fun(Fields) -> term_to_binary(list_to_tuple(Fields)) end,
    Good = [nif_session_cache_shared_v1, list_to_binary(Vsn), SystemNs, Session],
    Incoming = fun(Bytes) -> nif_session_cache_shared:incoming(Id, Bytes, 60, 86400) end,
    ?assertMatch({ok, {session, Id, {_, 7}, undefined, <<9:384>>, _}}, Incoming(Payload(Good))),
    %% A session field that is an atom this VM has never seen: refused by binary_to_term's safe mode, and not
    %% created. The same bytes with a known atom there are accepted, so the atom is the only reason.
    WithAtom = term_to_binary({nif_session_cache_shared_v1, list_to_binary(Vsn), SystemNs,
                               setelement(4, Session, placeholder_atom_xyz)}, [{minor_version, 2}]),
    ?assertMatch({ok, _}, Incoming(WithAtom)),
    Unknown = <<"nif_session_cache_never_seen_", (integer_to_binary(erlang:unique_integer([positive])))/binary>>,
    WithNewAtom = replace_atom(WithAtom, <<"placeholder_atom_xyz">>, Unknown),
    ?assertNotEqual(WithAtom, WithNewAtom),
    ?assertEqual(unusable, Incoming(WithNewAtom)),
    ?assertError(badarg, binary_to_existing_atom(Unknown)),
    Unusable = [Payload([nif_session_cache_shared_v1, <<"0.0">>, SystemNs, Session]),         % another ssl version
                Payload([other_format, list_to_binary(Vsn), SystemNs, Session]),              % another format
                Payload([nif_session_cache_shared_v1, list_to_binary(Vsn), SystemNs,
                         setelement(2, Session, <<0:256>>)]),                                  % another id
                Payload([nif_session_cache_shared_v1, list_to_binary(Vsn), SystemNs,
                         setelement(3, Session, no_internal_id)]),                             % no time stamp
                Payload([nif_session_cache_shared_v1, list_to_binary(Vsn), SystemNs, {not_a_session, Id}]),
                term_to_binary(Session),
                <<131, 255, 0>>,                                                               % not a term
                <<>>],
    [?assertEqual(unusable, Incoming(Bytes)) || Bytes <- Unusable].

%% Bytes with every occurrence of From's external form as a small UTF-8 atom changed into To's.
replace_atom(Bytes, From, To) ->
    Old = <<119, (byte_size(From)), From/binary>>,
    New = <<119, (byte_size(To)), To/binary>>,
    binary:replace(Bytes, Old, New, [global]).

bad_shared_options_fail_init_naming_the_option_not_the_value(Config) ->
    Good = shared(Config, <<"ns">>, [?KEY]),
    Secret = "S3CRETPW",
    Bad = [{keys, [<<"short">>]}, {keys, {file, "/nonexistent"}}, {url, 42}, {url, "http://x"},
           {url, "redis://u:" ++ Secret ++ "@127.0.0.1:notaport/"}, {url, "rediss://127.0.0.1:1/#insecure"},
           {url, ["redis://127.0.0.1:1/", "rediss://127.0.0.1:2/"]},
           %% URLs the redis crate refuses, which check/1 must refuse too: a database that is not a number, an
           %% address of every interface, a port past 16 bits, an unknown protocol, a password not UTF-8.
           {url, "redis://127.0.0.1:1/db"}, {url, "redis://0.0.0.0:1/"}, {url, "redis://[0::0]:1/"},
           {url, "redis://127.0.0.1:65536/"}, {url, "redis://127.0.0.1:1/?protocol=resp9"},
           {url, "redis://u:" ++ Secret ++ "%ff@127.0.0.1:1/"}, {url, "redis://[v1.x]:1/"},
           {namespace, "not a binary"}, {timeout_ms, 0}, {margin_s, -1}, {replay_cache, 0}, {colour, blue},
           {sentinels, "redis://127.0.0.1:1/"}, {master_name, <<"mymaster">>}, {username, 42},
           {password, {file, "/nonexistent"}}, {password, [Secret, self()]}, {tls, [{cacertfile, "/nonexistent"}]},
           {tls, [{certfile, "/nonexistent"}]}, {tls, [{verify, verify_none}]}],
    [begin
         Name = element(1, Opt),
         Opts = [Opt | proplists:delete(Name, Good)],
         {Reason, Stack} = try nif_session_cache:init([{role, server}, {shared, Opts}]) of
                               Store -> {no_error, Store}
                           catch
                               error:Why:Trace -> {Why, Trace}
                           end,
         Expected = case Opt of
                        {master_name, _} -> master_name;
                        {tls, _} -> tls;
                        _ -> Name
                    end,
         ?assertEqual({bad_shared_option, Expected}, Reason, Opt),
         %% check_config/0 says the same of the listeners' init args, without connecting.
         ?assertEqual({bad_shared_option, Expected}, nif_session_cache_shared:check([{shared, Opts}])),
         [?assertEqual(nomatch, binary:match(term_to_binary(Stack), Value)) || Value <- [?KEY, list_to_binary(Secret)]]
     end || Opt <- Bad],
    %% An improper list of options is refused by name, its tail (a password, say) left out.
    Improper = [{namespace, <<"ns">>} | list_to_binary(Secret)],
    {Why, Trace} = try nif_session_cache:init([{role, server}, {shared, Improper}]) catch error:W:T -> {W, T} end,
    ?assertEqual({{bad_shared_option, shared}, nomatch}, {Why, binary:match(term_to_binary(Trace), list_to_binary(Secret))}),
    ?assertEqual({bad_shared_option, shared}, nif_session_cache_shared:check([{shared, Improper}])),
    %% What the crate reads, init and check/1 both take: a database number, IPv6, a protocol, slashes around.
    [begin
         Opts = [{url, Url} | proplists:delete(url, Good)],
         ?assertEqual(ok, nif_session_cache_shared:check([{shared, Opts}]), Url),
         ?assertMatch(#{shared := #{}}, nif_session_cache:info(nif_session_cache:init([{role, server}, {shared, Opts}])))
     end || Url <- ["redis://127.0.0.1:1/15", "redis://[::1]:1/?protocol=resp3", "rediss://localhost:1//2//",
                    <<"redis://user:p%C3%A9@127.0.0.1:1">>]],
    %% Options as a map work as a proplist does; without shared, or for a client store, nothing changes.
    ?assertMatch(#{shared := #{topology := single, tls := false}},
                 nif_session_cache:info(nif_session_cache:init([{role, server}, {shared, maps:from_list(Good)}]))),
    ?assertEqual(ok, nif_session_cache_shared:check([{shared, maps:from_list(Good)}])),
    ?assertEqual(none, nif_session_cache_shared:check([{role, server}])),
    ?assertNot(is_map_key(shared, nif_session_cache:info(nif_session_cache:init([{role, server}])))),
    ?assertNot(is_map_key(shared, nif_session_cache:info(nif_session_cache:init([{role, client}, {shared, Good}])))).

%%% Helpers

shared(Config, Namespace, Keys) ->
    [{url, io_lib:format("redis://127.0.0.1:~b/", [?config(redis_port, Config)])},
     {namespace, Namespace}, {keys, Keys}, {timeout_ms, 1000}].

listen(Peer, Config, Shared) -> nif_session_cache_nodes:listen(Peer, Config, Shared).
shared_infos(Peer) -> nif_session_cache_nodes:shared_infos(Peer).
shared_of(Peer) -> nif_session_cache_nodes:shared_of(Peer).
await_published(Peer, N) -> nif_session_cache_nodes:await_published(Peer, N).
full_handshake(Config, Port) -> nif_session_cache_nodes:full_handshake(Config, Port).
resume(Config, Port, Id) -> nif_session_cache_nodes:resume(Config, Port, Id).

%% A session of the shape OTP's listener cache stores: an id, an internal id {TimeStamp, Unique}, a private key,
%% a master secret, and its time stamp, AgeS seconds ago.
fake_session(Id, AgeS) ->
    Stamp = erlang:monotonic_time() - erlang:convert_time_unit(AgeS, second, native),
    {session, Id, {Stamp, 7}, {'RSAPrivateKey', 'two-prime', 1, 2, 3, 4, 5, 6, 7, 8, asn1_NOVALUE},
     <<9:384>>, Stamp}.

%%% Redis

cluster_ok(Port) ->
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, Port, [binary, {active, false}], 1000),
    Info = resp(S, [<<"CLUSTER">>, <<"INFO">>]),
    gen_tcp:close(S),
    binary:match(Info, <<"cluster_state:ok">>) =/= nomatch.

redis_key(Namespace, Id) ->
    iolist_to_binary([<<"nif_session_cache:">>, integer_to_list(byte_size(Namespace)), $:, Namespace, $:, Id]).

redis_get(Config, Namespace, Id) ->
    redis(Config, [<<"GET">>, redis_key(Namespace, Id)]).

redis_set(Config, Namespace, Id, Value) ->
    <<"OK">> = redis(Config, [<<"SET">>, redis_key(Namespace, Id), Value]),
    ok.

redis(Config, Command) ->
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, ?config(redis_port, Config), [binary, {active, false}], 1000),
    try resp(S, Command) after gen_tcp:close(S) end.

%% One command in Redis's protocol, and its answer: a binary, undefined for nil, or a list for an array.
resp(S, Command) ->
    ok = gen_tcp:send(S, [$*, integer_to_list(length(Command)), "\r\n",
                          [[$$, integer_to_list(byte_size(A)), "\r\n", A, "\r\n"] || A <- Command]]),
    {Value, _} = parse(S, <<>>),
    Value.

parse(S, Buf) ->
    case binary:split(Buf, <<"\r\n">>) of
        [Line, Rest] -> parse_line(S, Line, Rest);
        [_] -> parse(S, more(S, Buf))
    end.

parse_line(_S, <<"+", Text/binary>>, Rest) -> {Text, Rest};
parse_line(_S, <<"-", Text/binary>>, _Rest) -> error({redis, Text});
parse_line(_S, <<":", N/binary>>, Rest) -> {binary_to_integer(N), Rest};
parse_line(_S, <<"$-1">>, Rest) -> {undefined, Rest};
parse_line(S, <<"$", N/binary>>, Rest) ->
    Len = binary_to_integer(N),
    Full = fill(S, Rest, Len + 2),
    <<Value:Len/binary, "\r\n", After/binary>> = Full,
    {Value, After};
parse_line(S, <<"*", N/binary>>, Rest) ->
    lists:foldl(fun(_, {Acc, R}) -> {V, R2} = parse(S, R), {Acc ++ [V], R2} end,
                {[], Rest}, lists:seq(1, binary_to_integer(N))).

fill(_S, Buf, Need) when byte_size(Buf) >= Need -> Buf;
fill(S, Buf, Need) -> fill(S, more(S, Buf), Need).

more(S, Buf) ->
    {ok, Data} = gen_tcp:recv(S, 0, 2000),
    <<Buf/binary, Data/binary>>.

cluster_port() ->
    case nif_session_cache_redis:free_port() of
        Port when Port < 55000 -> Port;
        _ -> cluster_port()
    end.
