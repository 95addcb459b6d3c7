%%% @private
%%% Which session store ssl uses for each of its three kinds of caller on this node, and a warning, once per VM, when
%%% that cannot work. Users call nif_session_cache:check_config/0.
%%%
%%% ssl reads its session callback keys in three places, and releases differ in which key each place reads:
%%%
%%%   caller                                OTP 25, 27     OTP 29
%%%   ssl_manager (makes the client store)  session_cb     session_cb, else client_session_cb
%%%   client connections (use that store)   session_cb     client_session_cb
%%%   listeners (each makes its own store)  session_cb     server_session_cb
%%%
%%% On 29, a user who sets only session_cb gets a client store made by one module and used by connections
%%% through another, which swallows the error: client resumption stops and nothing is logged. Setting all three keys
%%% works on every release. Whether this node's ssl reads the role keys is read from ssl itself (does its
%%% ssl_config module name client_session_cb?), not from a version number, so a release that backports the change
%%% is seen as it is.
-module(nif_session_cache_config).

-export([check/0, warn_once/0]).
-export_type([report/0, use/0, problem/0]).

-type key() :: session_cb | client_session_cb | server_session_cb.
%% The module a caller uses, and the ssl key it came from (default: none of its keys is set).
-type use() :: #{module := module(), from := key() | default}.
-type problem() :: client_store_and_connections_differ | listeners_ignore_session_cb | bad_shared_option.
%% The shared options of the listeners' init args: none, valid, or the option a listener's init would refuse.
-type shared() :: none | ok | {bad_shared_option, atom()}.
-type report() :: #{role_keys_read := boolean(),
                    client_store := use(),
                    client_connections := use(),
                    listeners := use(),
                    shared := shared(),
                    problems := [problem()]}.

-define(WARNED, {?MODULE, warned}).
-define(ROLE_KEYS, {?MODULE, role_keys_read}).

%% What ssl will use, as its environment stands now, and what cannot work. ssl reads the keys when its manager
%% starts (the client store) and when each connection or listener starts, so set them before ssl starts.
-spec check() -> report().
check() ->
    RoleKeys = role_keys_read(),
    SessionCb = env(session_cb),
    {Client, Server} =
        case RoleKeys of
            true -> {env(client_session_cb), env(server_session_cb)};
            false -> {SessionCb, SessionCb}
        end,
    Store = case {RoleKeys, SessionCb} of
                {true, #{from := default}} -> Client;
                _ -> SessionCb
            end,
    Connections = default_to(Client, ssl_client_session_cache_db),
    Listeners = default_to(Server, ssl_server_session_cache_db),
    ClientStore = default_to(Store, ssl_client_session_cache_db),
    Shared = nif_session_cache_shared:check(listener_args()),
    Problems = [client_store_and_connections_differ
                || maps:get(module, ClientStore) =/= maps:get(module, Connections)]
        ++ [listeners_ignore_session_cb
            || RoleKeys, maps:get(from, SessionCb) =:= session_cb, maps:get(from, Listeners) =:= default]
        ++ [bad_shared_option || {bad_shared_option, _} <- [Shared]],
    #{role_keys_read => RoleKeys, client_store => ClientStore, client_connections => Connections,
      listeners => Listeners, shared => Shared, problems => Problems}.

%% Logs one warning, the first time it is called in this VM with a configuration that cannot work, naming the
%% keys to set. nif_session_cache:init/1 calls it, just after ssl has read its keys. It never raises: a check must
%% not stop ssl's manager or a listener from starting.
-spec warn_once() -> ok.
warn_once() ->
    try
        case not persistent_term:get(?WARNED, false) andalso check() of
            #{problems := [_ | _] = Problems} = Report ->
                persistent_term:put(?WARNED, true),
                Keys = [P || P <- Problems, P =/= bad_shared_option] =/= [],
                logger:warning("nif_session_cache: ssl's session callback configuration cannot work as set on this "
                               "OTP release:~n~ts~ts"
                               "nif_session_cache:check_config() shows what each caller uses.",
                               [[explain(P, Report) || P <- Problems],
                                [["Set all three keys, which works on every release: "
                                  "{ssl, [{session_cb, nif_session_cache}, {client_session_cb, nif_session_cache}, "
                                  "{server_session_cb, nif_session_cache}]}.\n"] || Keys]],
                               %% No domain: OTP's default handler drops events of domains other than [otp].
                               #{nif_session_cache => config_check});
            _ ->
                ok
        end
    catch
        %% Not the reason: the check reads the shared options, and a reason could carry a password.
        Class:_ ->
            logger:error("nif_session_cache: configuration check failed (~p)", [Class]),
            ok
    end.

%%% Internal

explain(client_store_and_connections_differ, #{client_store := Store, client_connections := Conns}) ->
    io_lib:format("- the client store is made by ~ts (from ~ts), but client connections use it through ~ts "
                  "(from ~ts): client sessions are never resumed.~n",
                  [maps:get(module, Store), from(Store), maps:get(module, Conns), from(Conns)]);
explain(bad_shared_option, #{shared := {bad_shared_option, Name}}) ->
    io_lib:format("- the shared option ~ts of the listeners' init args is not valid: listeners will not start.~n",
                  [Name]);
explain(listeners_ignore_session_cb, #{listeners := Listeners}) ->
    io_lib:format("- listeners read server_session_cb, not session_cb: they use ~ts.~n", [maps:get(module, Listeners)]).

%% A listener's init args: server_session_cb_init_args, or else session_cb_init_args, on every release.
listener_args() ->
    case application:get_env(ssl, server_session_cb_init_args) of
        {ok, Args} -> Args;
        undefined -> application:get_env(ssl, session_cb_init_args, [])
    end.

from(#{from := default}) -> "no key: OTP's default";
from(#{from := Key}) -> atom_to_list(Key).

env(Key) ->
    case application:get_env(ssl, Key) of
        {ok, Module} when is_atom(Module) -> #{module => Module, from => Key};
        _ -> #{module => undefined, from => default}
    end.

default_to(#{module := undefined}, Default) -> #{module => Default, from => default};
default_to(Use, _Default) -> Use.

%% Does this node's ssl read client_session_cb? Its ssl_config module names the key if it does. Read once per VM.
%% Where the module's atoms cannot be read (a stripped or archived release), the release number decides: 29 was
%% the first to read the key.
-spec role_keys_read() -> boolean().
role_keys_read() ->
    case persistent_term:get(?ROLE_KEYS, undefined) of
        undefined ->
            Read = case beam_lib:chunks(code:which(ssl_config), [atoms]) of
                       {ok, {_, [{atoms, Atoms}]}} -> lists:keymember(client_session_cb, 2, Atoms);
                       {error, beam_lib, _} -> list_to_integer(erlang:system_info(otp_release)) >= 29
                   end,
            persistent_term:put(?ROLE_KEYS, Read),
            Read;
        Read ->
            Read
    end.
