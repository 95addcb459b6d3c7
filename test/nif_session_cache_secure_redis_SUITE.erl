%%% The shared level against Redis as production runs it: over TLS (a CA, server and client certificates made by
%%% openssl for the run), with mutual TLS, and as an ACL user limited to our keys with the default user off. Two
%%% peer nodes behind a TCP proxy, as in nif_session_cache_cluster_SUITE, each logging to a file of its own, and
%%% redis-servers started on free loopback ports and killed at the end.
-module(nif_session_cache_secure_redis_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2, end_per_testcase/2]).
-export([through_a_tls_redis_sessions_resume_across_nodes/1,
         with_mutual_tls_sessions_resume_and_without_a_client_certificate_they_do_not/1,
         a_node_that_trusts_another_ca_resumes_nothing_and_completes_every_handshake/1,
         an_acl_user_limited_to_our_keys_shares_by_url_and_by_options_with_the_default_user_off/1,
         a_wrong_password_works_alone_counts_auth_misses_and_warns_once_naming_the_option/1,
         no_log_of_any_node_holds_a_password/1]).

-define(KEY, <<16#7e57:256>>).
-define(PASSWORD, <<"acl-pw-5b1e9c">>).
-define(WRONG, <<"wrong-pw-77aa21">>).
-define(WARNING, "refused the shared level's credentials").

all() ->
    [through_a_tls_redis_sessions_resume_across_nodes,
     with_mutual_tls_sessions_resume_and_without_a_client_certificate_they_do_not,
     a_node_that_trusts_another_ca_resumes_nothing_and_completes_every_handshake,
     an_acl_user_limited_to_our_keys_shares_by_url_and_by_options_with_the_default_user_off,
     a_wrong_password_works_alone_counts_auth_misses_and_warns_once_naming_the_option,
     no_log_of_any_node_holds_a_password].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(ssl),
    Dir = ?config(priv_dir, Config),
    {Server, Client} = nif_session_cache_demo:tls_options(),
    Pki = nif_session_cache_redis:pki(filename:join(Dir, "pki")),
    Other = nif_session_cache_redis:pki(filename:join(Dir, "other-pki")),
    [TlsPort, MutualPort, AclPort] = [nif_session_cache_redis:free_port() || _ <- [1, 2, 3]],
    Tls = nif_session_cache_redis:start_tls(TlsPort, filename:join(Dir, "tls"), Pki, false),
    Mutual = nif_session_cache_redis:start_tls(MutualPort, filename:join(Dir, "mutual"), Pki, true),
    Acl = nif_session_cache_redis:start(AclPort, filename:join(Dir, "acl"), []),
    %% An admin to set the ACL up, a user allowed our keys and the two commands we send, and no default user.
    Cli = fun(Args) -> nif_session_cache_redis:redis_cli(AclPort, Args) end,
    "OK\n" = Cli("acl setuser admin on '>admin-pw' '~*' '&*' '+@all'"),
    "OK\n" = Cli(["acl setuser nsc on '>", ?PASSWORD, "' '~nif_session_cache:*' +get +set"]),
    "OK\n" = Cli("acl setuser default off"),
    PasswordFile = filename:join(Dir, "redis-password"),
    ok = file:write_file(PasswordFile, [?PASSWORD, "\n"]),
    Logs = [filename:join(Dir, Name) || Name <- ["node_a.log", "node_b.log", "test_node.log"]],
    ok = logger:add_handler(?MODULE, logger_std_h, #{level => info, config => #{file => lists:last(Logs)}}),
    Proxy = nif_session_cache_proxy:start(),
    Nodes = [nif_session_cache_nodes:start_node(Log) || Log <- lists:sublist(Logs, 2)],
    [{server_opts, Server}, {client_opts, Client}, {pki, Pki}, {other_pki, Other}, {proxy, Proxy},
     {nodes, Nodes}, {logs, Logs}, {password_file, PasswordFile},
     {servers, [{Tls, TlsPort}, {Mutual, MutualPort}, {Acl, AclPort}]},
     {tls_port, TlsPort}, {mutual_port, MutualPort}, {acl_port, AclPort} | Config].

end_per_suite(Config) ->
    [peer:stop(Peer) || Peer <- ?config(nodes, Config)],
    _ = logger:remove_handler(?MODULE),
    [nif_session_cache_redis:kill(Port) || {_, Port} <- ?config(servers, Config)],
    ok.

init_per_testcase(_Case, Config) ->
    [{caches, nif_session_cache_nodes:caches(?config(nodes, Config))} | Config].

end_per_testcase(_Case, Config) ->
    nif_session_cache_nodes:no_cache_restarted(proplists:get_value(caches, Config, [])).

%%% Cases

through_a_tls_redis_sessions_resume_across_nodes(Config) ->
    [A, B] = ?config(nodes, Config),
    Shared = tls_shared(Config, <<"tls">>, [{cacertfile, ca(Config)}]),
    [PortA, PortB] = [nif_session_cache_nodes:listen(N, Config, Shared) || N <- [A, B]],
    both_ways(Config, A, PortA, B, PortB),
    ?assertMatch(#{topology := single, tls := true, hits := H} when H >= 1, nif_session_cache_nodes:shared_of(B)).

with_mutual_tls_sessions_resume_and_without_a_client_certificate_they_do_not(Config) ->
    [A, B] = ?config(nodes, Config),
    #{client_cert := Cert, client_key := Key} = ?config(pki, Config),
    Mutual = mutual_shared(Config, <<"mutual">>, [{cacertfile, ca(Config)}, {certfile, Cert}, {keyfile, Key}]),
    [PortA, PortB] = [nif_session_cache_nodes:listen(N, Config, Mutual) || N <- [A, B]],
    both_ways(Config, A, PortA, B, PortB),
    %% The server asks for a client certificate: a node without one cannot read, and its handshakes go on in full.
    Id = nif_session_cache_nodes:full_handshake(Config, PortA),
    ok = nif_session_cache_nodes:await_published(A, 2),
    Without = nif_session_cache_nodes:listen(B, Config, mutual_shared(Config, <<"mutual">>,
                                                                       [{cacertfile, ca(Config)}])),
    ?assertMatch({_, false}, nif_session_cache_nodes:resume(Config, Without, Id)),
    ?assertMatch(#{hits := 0, misses := #{error := E}} when E >= 1, nif_session_cache_nodes:shared_of(B)).

a_node_that_trusts_another_ca_resumes_nothing_and_completes_every_handshake(Config) ->
    [A, B] = ?config(nodes, Config),
    PortA = nif_session_cache_nodes:listen(A, Config, tls_shared(Config, <<"other-ca">>, [{cacertfile, ca(Config)}])),
    #{ca := OtherCa} = ?config(other_pki, Config),
    PortB = nif_session_cache_nodes:listen(B, Config, tls_shared(Config, <<"other-ca">>, [{cacertfile, OtherCa}])),
    Ids = [nif_session_cache_nodes:full_handshake(Config, PortA) || _ <- [1, 2, 3]],
    ok = nif_session_cache_nodes:await_published(A, 3),
    %% Every handshake on B completes, in full: B cannot verify Redis, so it reads nothing and writes nothing.
    [?assertMatch({_, false}, nif_session_cache_nodes:resume(Config, PortB, Id)) || Id <- Ids],
    Own = nif_session_cache_nodes:full_handshake(Config, PortB),
    ?assertEqual({Own, true}, nif_session_cache_nodes:resume(Config, PortB, Own)),
    #{hits := 0, sets := 0, misses := Misses} = nif_session_cache_nodes:shared_of(B),
    ?assert(maps:get(error, Misses) + maps:get(breaker_open, Misses) >= 3, Misses).

an_acl_user_limited_to_our_keys_shares_by_url_and_by_options_with_the_default_user_off(Config) ->
    [A, B] = ?config(nodes, Config),
    Port = ?config(acl_port, Config),
    InUrl = [{url, io_lib:format("redis://nsc:~s@127.0.0.1:~b/", [?PASSWORD, Port])} | common(<<"acl">>)],
    Options = [{url, nif_session_cache_nodes:redis_url(Port)}, {username, <<"nsc">>},
               {password, {file, ?config(password_file, Config)}} | common(<<"acl">>)],
    PortA = nif_session_cache_nodes:listen(A, Config, InUrl),
    PortB = nif_session_cache_nodes:listen(B, Config, maps:from_list(Options)),
    both_ways(Config, A, PortA, B, PortB),
    %% Redis holds our keys and nothing else, and refuses anyone but that user.
    Keys = nif_session_cache_redis:redis_cli(Port, io_lib:format("--user nsc --pass ~s --no-auth-warning keys '*'",
                                                                  [?PASSWORD])),
    ?assertMatch("NOPERM" ++ _, Keys),
    ?assertMatch("NOAUTH" ++ _, nif_session_cache_redis:redis_cli(Port, "get x")),
    ?assertMatch(#{misses := #{auth := 0}}, nif_session_cache_nodes:shared_of(A)),
    %% info/1 of no store, on either node, holds the password (from the URL on A, from its file on B).
    [?assertEqual({N, nomatch}, {N, binary:match(term_to_binary(peer:call(N, nif_session_cache, stores, [])),
                                                 ?PASSWORD)})
     || N <- [A, B]].

a_wrong_password_works_alone_counts_auth_misses_and_warns_once_naming_the_option(Config) ->
    [A, B] = ?config(nodes, Config),
    Port = ?config(acl_port, Config),
    Right = [{url, nif_session_cache_nodes:redis_url(Port)}, {username, <<"nsc">>}, {password, ?PASSWORD}
             | common(<<"wrong">>)],
    Wrong = lists:keystore(password, 1, Right, {password, ?WRONG}) ++ [{breaker_threshold, 1000}],
    PortA = nif_session_cache_nodes:listen(A, Config, Right),
    PortB = nif_session_cache_nodes:listen(B, Config, Wrong),
    Ids = [nif_session_cache_nodes:full_handshake(Config, PortA) || _ <- [1, 2, 3]],
    ok = nif_session_cache_nodes:await_published(A, 3),
    %% As with Redis down: B resumes its own sessions and none of A's, and every handshake completes.
    [?assertMatch({_, false}, nif_session_cache_nodes:resume(Config, PortB, Id)) || Id <- Ids],
    Own = nif_session_cache_nodes:full_handshake(Config, PortB),
    ?assertEqual({Own, true}, nif_session_cache_nodes:resume(Config, PortB, Own)),
    ?assertMatch(#{hits := 0, sets := 0, misses := #{auth := 3}}, nif_session_cache_nodes:shared_of(B)),
    %% One warning, naming the options, however many refusals; logged on B alone.
    [LogA, LogB, _] = ?config(logs, Config),
    ok = nif_session_cache_demo:wait_until(fun() -> count(LogB, ?WARNING) =:= 1 end, 5000),
    ?assertEqual(0, count(LogA, ?WARNING)),
    ?assertNotEqual(0, count(LogB, "username and password options")).

%% Runs last: every log of the suite, each node's (crash reports of a refused listener included) and the test
%% node's, after TLS, ACL and wrong-password runs. A listener whose URL holds a password but is refused first.
no_log_of_any_node_holds_a_password(Config) ->
    [_A, B] = ?config(nodes, Config),
    BadUrl = [{url, io_lib:format("redis://nsc:~s@127.0.0.1:notaport/", [?PASSWORD])} | common(<<"refused">>)],
    ?assertError(_, nif_session_cache_nodes:listen(B, Config, BadUrl)),
    timer:sleep(500), % the crash report of the refused listener's cache process is written by the handler
    Logs = ?config(logs, Config),
    ?assert(lists:sum([count(Log, "bad_shared_option") || Log <- Logs]) >= 1),
    [?assertEqual({Log, 0}, {Log, count(Log, binary_to_list(P))}) || Log <- Logs, P <- [?PASSWORD, ?WRONG]].

%%% Helpers

common(Namespace) ->
    [{namespace, Namespace}, {keys, [?KEY]}, {timeout_ms, 1000}].

tls_shared(Config, Namespace, Tls) ->
    [{url, nif_session_cache_nodes:redis_url("rediss", ?config(tls_port, Config))}, {tls, Tls} | common(Namespace)].

mutual_shared(Config, Namespace, Tls) ->
    [{url, nif_session_cache_nodes:redis_url("rediss", ?config(mutual_port, Config))}, {tls, Tls}
     | common(Namespace)].

ca(Config) ->
    maps:get(ca, ?config(pki, Config)).

%% A session made on A resumes on B, and one made on B resumes on A.
both_ways(Config, A, PortA, B, PortB) ->
    SetsA = maps:get(sets, nif_session_cache_nodes:shared_of(A)),
    Id1 = nif_session_cache_nodes:full_handshake(Config, PortA),
    ok = nif_session_cache_nodes:await_published(A, SetsA + 1),
    ?assertEqual({Id1, true}, nif_session_cache_nodes:resume(Config, PortB, Id1)),
    SetsB = maps:get(sets, nif_session_cache_nodes:shared_of(B)),
    Id2 = nif_session_cache_nodes:full_handshake(Config, PortB),
    ok = nif_session_cache_nodes:await_published(B, SetsB + 1),
    ?assertEqual({Id2, true}, nif_session_cache_nodes:resume(Config, PortA, Id2)).

%% How often Text occurs in the file at Path (0 if there is no such file yet).
count(Path, Text) ->
    case file:read_file(Path) of
        {ok, Bin} -> length(binary:matches(Bin, iolist_to_binary(Text)));
        {error, enoent} -> 0
    end.
