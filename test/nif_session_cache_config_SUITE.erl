%%% ssl's session callback keys on the running OTP release: check_config/0 tells what each of ssl's callers uses,
%%% and the first init of a configuration that cannot work logs one warning naming the keys to set. The verdict is
%%% held to real TLS 1.2 connections: a configuration check_config/0 passes resumes, one it flags does not.
-module(nif_session_cache_config_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2, end_per_testcase/2]).
-export([log/2]).
-export([all_three_keys_put_every_caller_on_our_cache_and_resume/1,
         only_session_cb_is_flagged_exactly_when_client_resumption_breaks/1,
         the_warning_is_logged_once_per_vm_and_names_the_keys/1,
         a_plain_node_prints_the_warning_through_otps_default_handler/1,
         on_a_release_that_reads_role_keys_only_session_cb_is_two_problems/1,
         on_a_release_that_reads_only_session_cb_the_role_keys_change_nothing/1,
         nothing_set_is_otps_defaults_and_no_problem/1,
         a_bad_shared_option_in_ssls_env_is_named_at_boot_never_its_value/1]).

-define(KEYS, [session_cb, client_session_cb, server_session_cb]).
-define(ARGS, [session_cb_init_args, server_session_cb_init_args]).
-define(ROLE_KEYS_READ, {nif_session_cache_config, role_keys_read}).
-define(WARNED, {nif_session_cache_config, warned}).

all() ->
    [all_three_keys_put_every_caller_on_our_cache_and_resume,
     only_session_cb_is_flagged_exactly_when_client_resumption_breaks,
     the_warning_is_logged_once_per_vm_and_names_the_keys,
     a_plain_node_prints_the_warning_through_otps_default_handler,
     on_a_release_that_reads_role_keys_only_session_cb_is_two_problems,
     on_a_release_that_reads_only_session_cb_the_role_keys_change_nothing,
     nothing_set_is_otps_defaults_and_no_problem,
     a_bad_shared_option_in_ssls_env_is_named_at_boot_never_its_value].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(crypto),
    {Server, Client} = nif_session_cache_demo:tls_options(),
    [{server_opts, Server}, {client_opts, Client} | Config].

end_per_suite(_Config) ->
    _ = application:stop(ssl),
    [application:unset_env(ssl, K) || K <- ?KEYS ++ ?ARGS],
    ok.

init_per_testcase(_Case, Config) ->
    _ = application:stop(ssl),
    [application:unset_env(ssl, K) || K <- ?KEYS ++ ?ARGS],
    %% What this VM's ssl really reads, from a fresh look, and no warning given yet.
    _ = persistent_term:erase(?ROLE_KEYS_READ),
    _ = persistent_term:erase(?WARNED),
    ok = logger:add_handler(?MODULE, ?MODULE, #{level => warning, config => #{pid => self()}}),
    Config.

end_per_testcase(_Case, _Config) ->
    _ = logger:remove_handler(?MODULE),
    _ = persistent_term:erase(?ROLE_KEYS_READ),
    _ = persistent_term:erase(?WARNED),
    _ = application:stop(ssl),
    [application:unset_env(ssl, K) || K <- ?KEYS ++ ?ARGS],
    ok.

%% check_config/0 reads the listeners' shared options where ssl will (server_session_cb_init_args, else
%% session_cb_init_args) and names a bad one, without connecting; the first init's warning names it too, and
%% neither carries the option's value.
a_bad_shared_option_in_ssls_env_is_named_at_boot_never_its_value(_Config) ->
    set(?KEYS),
    Good = #{url => "redis://127.0.0.1:1/", namespace => <<"ns">>, keys => [<<1:256>>]},
    ?assertMatch(#{shared := none, problems := []}, nif_session_cache:check_config()),
    ok = application:set_env(ssl, session_cb_init_args, [{shared, Good}]),
    ?assertMatch(#{shared := ok, problems := []}, nif_session_cache:check_config()),
    Secret = "hunter2-9f3",
    ok = application:set_env(ssl, server_session_cb_init_args,
                             [{shared, Good#{url => "redis://u:" ++ Secret ++ "@127.0.0.1:bad/"}}]),
    Report = nif_session_cache:check_config(),
    ?assertMatch(#{shared := {bad_shared_option, url}, problems := [bad_shared_option]}, Report),
    ?assertEqual(nomatch, string:find(io_lib:format("~p", [Report]), Secret)),
    _ = nif_session_cache:init([{role, client}]),
    [Text] = [message(Event) || Event <- warnings()],
    ?assertNotEqual(nomatch, string:find(Text, "shared option url")),
    ?assertEqual(nomatch, string:find(Text, Secret)),
    ?assertEqual(nomatch, string:find(Text, "Set all three keys")).

%% logger handler callback: forwards our warnings to the test process.
log(#{meta := #{nif_session_cache := config_check}} = Event, #{config := #{pid := Pid}}) ->
    Pid ! {logged, Event};
log(_Event, _Config) ->
    ok.

%%% Cases

all_three_keys_put_every_caller_on_our_cache_and_resume(Config) ->
    set(?KEYS),
    Ours = nif_session_cache,
    ?assertMatch(#{client_store := #{module := Ours}, client_connections := #{module := Ours},
                   listeners := #{module := Ours}, problems := []}, nif_session_cache:check_config()),
    ok = ssl:start(),
    ?assertEqual({true, true}, resumes(Config)),
    ?assertEqual([], warnings()).

%% The trap of OTP 29 with only session_cb, held to what ssl really does on this release: if client sessions stop
%% resuming, check_config/0 says why and a warning is logged; if they resume, it finds nothing and logs nothing.
only_session_cb_is_flagged_exactly_when_client_resumption_breaks(Config) ->
    set([session_cb]),
    #{problems := Problems} = nif_session_cache:check_config(),
    ok = ssl:start(),
    {ClientResumes, ListenerUsedOurs} = resumes(Config),
    ?assertEqual(not ClientResumes, lists:member(client_store_and_connections_differ, Problems)),
    ?assertEqual(not ListenerUsedOurs, lists:member(listeners_ignore_session_cb, Problems)),
    ?assertEqual(Problems =/= [], length(warnings()) =:= 1).

the_warning_is_logged_once_per_vm_and_names_the_keys(_Config) ->
    force_role_keys_read(true),
    set([session_cb]),
    Store = nif_session_cache:init([{role, client}]),
    [#{level := warning} = Event] = warnings(),
    Text = message(Event),
    [?assertNotEqual(nomatch, string:find(Text, atom_to_list(K)), K) || K <- ?KEYS],
    _ = nif_session_cache:init([{role, server}]),
    ?assertEqual([], warnings()),
    ok = nif_session_cache:terminate(Store).

%% A user's node, with OTP's own logger configuration: the warning must pass the default handler's filters and
%% reach standard output when ssl starts. The node pretends to read the role keys, so that this holds on every
%% release.
a_plain_node_prints_the_warning_through_otps_default_handler(_Config) ->
    Erl = filename:join([code:root_dir(), "bin", "erl"]),
    Ebin = filename:dirname(code:which(nif_session_cache)),
    Eval = "persistent_term:put({nif_session_cache_config, role_keys_read}, true), "
           "ok = application:set_env(ssl, session_cb, nif_session_cache), ok = ssl:start(), "
           "timer:sleep(200), halt().",
    Out = os:cmd(lists:flatten(io_lib:format("~ts -noshell -pa ~ts -eval '~ts' 2>&1", [Erl, Ebin, Eval]))),
    [?assertNotEqual(nomatch, string:find(Out, Text), {Text, Out})
     || Text <- ["WARNING", "client sessions are never resumed", "{client_session_cb, nif_session_cache}"]].

on_a_release_that_reads_role_keys_only_session_cb_is_two_problems(_Config) ->
    force_role_keys_read(true),
    set([session_cb]),
    ?assertMatch(#{role_keys_read := true,
                   client_store := #{module := nif_session_cache, from := session_cb},
                   client_connections := #{module := ssl_client_session_cache_db, from := default},
                   listeners := #{module := ssl_server_session_cache_db, from := default},
                   problems := [client_store_and_connections_differ, listeners_ignore_session_cb]},
                 nif_session_cache:check_config()),
    %% OTP 29's ssl_manager falls back on client_session_cb when session_cb is unset.
    set([client_session_cb, server_session_cb]),
    ok = application:unset_env(ssl, session_cb),
    ?assertMatch(#{client_store := #{module := nif_session_cache, from := client_session_cb},
                   client_connections := #{module := nif_session_cache, from := client_session_cb},
                   listeners := #{module := nif_session_cache, from := server_session_cb},
                   problems := []},
                 nif_session_cache:check_config()).

on_a_release_that_reads_only_session_cb_the_role_keys_change_nothing(_Config) ->
    force_role_keys_read(false),
    set([client_session_cb, server_session_cb]),
    ?assertMatch(#{role_keys_read := false,
                   client_store := #{module := ssl_client_session_cache_db, from := default},
                   client_connections := #{module := ssl_client_session_cache_db, from := default},
                   listeners := #{module := ssl_server_session_cache_db, from := default},
                   problems := []},
                 nif_session_cache:check_config()),
    set([session_cb]),
    ?assertMatch(#{client_store := #{module := nif_session_cache, from := session_cb},
                   client_connections := #{module := nif_session_cache, from := session_cb},
                   listeners := #{module := nif_session_cache, from := session_cb},
                   problems := []},
                 nif_session_cache:check_config()).

nothing_set_is_otps_defaults_and_no_problem(_Config) ->
    ?assertMatch(#{client_store := #{module := ssl_client_session_cache_db, from := default},
                   client_connections := #{module := ssl_client_session_cache_db, from := default},
                   listeners := #{module := ssl_server_session_cache_db, from := default},
                   problems := []},
                 nif_session_cache:check_config()).

%%% Helpers

set(Keys) ->
    [ok = application:set_env(ssl, K, nif_session_cache) || K <- Keys],
    ok.

%% The test pretends to run on a release that does (or does not) read the role keys.
force_role_keys_read(Bool) ->
    persistent_term:put(?ROLE_KEYS_READ, Bool).

%% {whether a second client connection resumed the first one's session, whether the listener stored it in one of
%% our stores}.
resumes(Config) ->
    {Listener, Port} = nif_session_cache_demo:start_listener(?config(server_opts, Config), []),
    try
        Client = ?config(client_opts, Config),
        {Id, _} = nif_session_cache_demo:connect(Port, Client, []),
        %% The client store registers asynchronously; give it time whichever module holds it.
        timer:sleep(300),
        {Id2, _} = nif_session_cache_demo:connect(Port, Client, []),
        InOurs = [N || #{role := server, entries := N, terminated := false} <- nif_session_cache:stores(), N > 0],
        {Id =:= Id2, InOurs =/= []}
    after
        ssl:close(Listener)
    end.

warnings() ->
    receive {logged, Event} -> [Event | warnings()] after 200 -> [] end.

message(#{msg := {string, S}}) -> unicode:characters_to_list(S);
message(#{msg := {Format, Args}}) -> lists:flatten(io_lib:format(Format, Args)).
