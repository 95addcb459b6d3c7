%%% @private
%%% The shared level's Erlang side, and the one owner of its wire format. It reads {shared, Opts} from a listener
%%% store's init args (OTP passes server_session_cache_init_args, or session_cb_init_args, with {role, server}),
%%% makes what leaves the node for each session the store keeps (outgoing/3), and checks what comes back from
%%% Redis before OTP sees it (incoming/4). The NIF only encodes, seals and sends the one, and fetches and opens the
%%% other (native/nif_session_cache/src/level.rs).
%%%
%%% What leaves: {?FORMAT, SslVsn, SystemNs, Session} in the external format, sealed, for the session's remaining
%%% lifetime: the session with every field that holds a private key set to undefined (found by its shape, not by a
%%% record position, as positions differ between releases), and SystemNs its time stamp as system time.
%%%
%%% What comes back is returned only if it was made by the same ssl version (so that #session{} has the same
%%% shape), names the session id it is looked up under, decodes without making atoms, and has more than the
%%% margin of its lifetime left once its time stamp is rebased into this node's monotonic time: OTP's listener
%%% cache deletes an expired session's internal_id from its own order tree, where a remote session is not, and
%%% would crash.
-module(nif_session_cache_shared).

-export([attach/3, lookup/2, publish/3]).
%% For the tests.
-export([config/1, outgoing/3, incoming/4]).

-define(FORMAT, nif_session_cache_shared_v1).
-define(DEFAULTS, #{timeout_ms => 50, queue => 10000, max_in_flight => 16, max_reads_per_s => 1000,
                    breaker_threshold => 5,
                    breaker_cool_down_ms => 1000, margin_s => 60}).

%% Gives a listener's store its shared level if its init args ask for one. A bad option raises
%% {bad_shared_option, Name}, naming the option and never its value.
-spec attach(nif_session_cache_nif:store(), client | server | undefined, term()) -> ok.
attach(Store, server, Args) ->
    case shared_opts(Args) of
        {ok, Opts} ->
            case nif_session_cache_nif:share(Store, config(Opts)) of
                ok -> ok;
                {error, Option} -> erlang:error({bad_shared_option, Option})
            end;
        none ->
            ok
    end;
attach(_Store, _Role, _Args) ->
    ok.

%% The first {shared, Opts} of init's arguments, which may be any term (init accepts anything).
shared_opts([{shared, Opts} | _]) -> {ok, Opts};
shared_opts([_ | Rest]) -> shared_opts(Rest);
shared_opts(_) -> none.

%% The NIF's configuration map from the user's options, or {bad_shared_option, Name}.
-spec config(term()) -> map().
config(Opts) when is_list(Opts) ->
    Given = maps:from_list([option(Opt) || Opt <- Opts]),
    [erlang:error({bad_shared_option, Name}) || Name <- [url, namespace, keys], not is_map_key(Name, Given)],
    maps:merge(?DEFAULTS, Given);
config(_) ->
    erlang:error({bad_shared_option, shared}).

option({url, Url}) ->
    case urls(Url) of
        [_ | _] = Urls -> {url, Urls};
        _ -> erlang:error({bad_shared_option, url})
    end;
option({namespace, Namespace}) when is_binary(Namespace), byte_size(Namespace) > 0, byte_size(Namespace) =< 255 ->
    {namespace, Namespace};
option({keys, Keys}) ->
    case keys(Keys) of
        [_ | _] = Valid -> {keys, Valid};
        _ -> erlang:error({bad_shared_option, keys})
    end;
option({Name, N}) when (Name =:= timeout_ms orelse Name =:= queue orelse Name =:= max_in_flight orelse
                        Name =:= max_reads_per_s orelse Name =:= breaker_threshold orelse
                        Name =:= breaker_cool_down_ms),
                       is_integer(N), N > 0, N < 1 bsl 32 ->
    {Name, N};
option({margin_s, N}) when is_integer(N), N >= 1, N < 1 bsl 32 ->
    {margin_s, N};
option({Name, _}) when is_atom(Name) ->
    erlang:error({bad_shared_option, Name});
option(_) ->
    erlang:error({bad_shared_option, shared}).

%% A URL as a string or a binary, or a list of them (Redis Cluster's seeds).
urls(Url) when is_binary(Url) -> [Url];
urls([C | _] = Url) when is_integer(C) -> urls(unicode:characters_to_binary(Url));
urls(Urls) when is_list(Urls) -> lists:append([urls(Url) || Url <- Urls, Url =/= []]);
urls(_) -> error.

%% 32-byte keys, or {file, Path} to a file of lines of 64 hex digits; the first seals.
keys({file, Path}) ->
    case file:read_file(Path) of
        {ok, Text} ->
            Lines = [L || L <- binary:split(Text, [<<"\n">>, <<"\r\n">>], [global, trim_all]), L =/= <<>>],
            keys([try binary:decode_hex(string:trim(L)) catch _:_ -> bad end || L <- Lines]);
        {error, _} ->
            error
    end;
keys(Keys) when is_list(Keys) ->
    case lists:all(fun(K) -> is_binary(K) andalso byte_size(K) =:= 32 end, Keys) of
        true -> Keys;
        false -> error
    end;
keys(_) ->
    error.

%% Feeds the shared level the session the store just kept under Id. Never raises: a session that cannot be shared
%% (not an OTP session, or past its lifetime) stays local.
-spec publish(nif_session_cache_nif:store(), binary(), term()) -> ok.
publish(Store, Id, Session) ->
    case outgoing(Session, lifetime(), erlang:monotonic_time()) of
        {ok, Payload, TtlMs} ->
            _ = nif_session_cache_nif:publish(Store, Id, Payload, TtlMs),
            ok;
        none ->
            ok
    end.

%% What leaves the node for Session, and how many milliseconds Redis keeps it: none for a term that is no OTP
%% session (no time stamp next to an internal id {Stamp, Unique}), or one past LifetimeS at Now.
-spec outgoing(term(), pos_integer(), integer()) -> {ok, tuple(), pos_integer()} | none.
outgoing(Session, LifetimeS, Now) when tuple_size(Session) > 1, element(1, Session) =:= session ->
    Fields = tuple_to_list(Session),
    case time_stamp(Fields) of
        {ok, Stamp} ->
            case LifetimeS * 1000 - max(0, erlang:convert_time_unit(Now - Stamp, native, millisecond)) of
                TtlMs when TtlMs > 0 ->
                    SystemNs = erlang:convert_time_unit(Stamp + erlang:time_offset(), native, nanosecond),
                    {ok, {?FORMAT, ssl_vsn(), SystemNs, list_to_tuple([strip(F) || F <- Fields])}, TtlMs};
                _ ->
                    none
            end;
        none ->
            none
    end;
outgoing(_Session, _LifetimeS, _Now) ->
    none.

%% A field that holds the listener's private key is never sent: a public_key private key record, one with its
%% parameters ({Key, Params}, RSA-PSS), or a key held by an engine or a signing fun (a map with engine, sign_fun or
%% key_id).
strip(Field) ->
    case private_key(Field) of
        true -> undefined;
        false -> Field
    end.

private_key(Key) when tuple_size(Key) > 0 ->
    lists:member(element(1, Key), ['RSAPrivateKey', 'ECPrivateKey', 'DSAPrivateKey', 'PrivateKeyInfo',
                                   'OneAsymmetricKey'])
        orelse (tuple_size(Key) =:= 2 andalso private_key(element(1, Key)));
private_key(Key) when is_map(Key) ->
    lists:any(fun(Name) -> is_map_key(Name, Key) end, [engine, sign_fun, key_id]);
private_key(_Field) ->
    false.

%% A session from Redis for Id, checked and rebased, or undefined. Runs the Redis read on a dirty IO scheduler.
-spec lookup(nif_session_cache_nif:store(), term()) -> tuple() | undefined.
lookup(Store, Id) when is_binary(Id) ->
    case nif_session_cache_nif:fetch(Store, Id) of
        {ok, Bytes, MarginS} ->
            case incoming(Id, Bytes, MarginS, lifetime()) of
                {ok, Session} ->
                    Session;
                unusable ->
                    ok = nif_session_cache_nif:unusable(Store),
                    undefined
            end;
        {miss, _Reason} ->
            undefined
    end;
lookup(_Store, _Id) ->
    undefined.

%% Session from the bytes Redis held for Id, if this node can use it: same ssl version, a session tuple that
%% names Id, and more than MarginS seconds of LifetimeS left once rebased.
-spec incoming(binary(), binary(), non_neg_integer(), pos_integer()) -> {ok, tuple()} | unusable.
incoming(Id, Bytes, MarginS, LifetimeS) ->
    Vsn = ssl_vsn(),
    try binary_to_term(Bytes, [safe]) of
        {?FORMAT, Vsn, SystemNs, Sent} when is_integer(SystemNs), is_tuple(Sent), element(1, Sent) =:= session ->
            Fields = tuple_to_list(Sent),
            case {lists:member(Id, Fields), time_stamp(Fields)} of
                {true, {ok, Stamp}} ->
                    Local = erlang:convert_time_unit(SystemNs, nanosecond, native) - erlang:time_offset(),
                    Lived = erlang:convert_time_unit(erlang:monotonic_time() - Local, native, second),
                    case Lived < LifetimeS - MarginS of
                        true -> {ok, list_to_tuple([rebase(F, Stamp, Local) || F <- Fields])};
                        false -> unusable
                    end;
                _ ->
                    unusable
            end;
        _ ->
            unusable
    catch
        error:badarg -> unusable
    end.

%% The session's time stamp: the integer T of the field next to an internal id {T, Unique}, as OTP's listener
%% cache sets them.
time_stamp(Fields) ->
    Stamps = [T || {T, U} <- Fields, is_integer(T), is_integer(U), lists:member(T, Fields)],
    case Stamps of
        [Stamp] -> {ok, Stamp};
        _ -> none
    end.

rebase(Stamp, Stamp, Local) -> Local;
rebase({Stamp, Unique}, Stamp, Local) when is_integer(Unique) -> {Local, Unique};
rebase(Field, _Stamp, _Local) -> Field.

lifetime() ->
    case application:get_env(ssl, session_lifetime) of
        {ok, Seconds} when is_integer(Seconds) -> Seconds;
        _ -> 24 * 60 * 60
    end.

ssl_vsn() ->
    case application:get_key(ssl, vsn) of
        {ok, Vsn} -> list_to_binary(Vsn);
        undefined -> <<>>
    end.
