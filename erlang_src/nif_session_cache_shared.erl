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

-export([attach/3, lookup/2, publish/3, check/1]).
%% For the tests.
-export([config/1, outgoing/3, incoming/4]).

-define(FORMAT, nif_session_cache_shared_v1).
-define(DEFAULTS, #{timeout_ms => 50, queue => 10000, max_in_flight => 16, max_reads_per_s => 1000,
                    breaker_threshold => 5, breaker_cool_down_ms => 1000, margin_s => 60, replay_cache => 1000,
                    master_name => <<>>, username => <<>>, password => <<>>, tls => []}).
-define(COUNTS, [timeout_ms, queue, max_in_flight, max_reads_per_s, breaker_threshold, breaker_cool_down_ms,
                 replay_cache]).

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

%% What a listener would make of Args's shared options, without connecting to anything: none, ok, or the option
%% that init would refuse. For nif_session_cache:check_config/0.
-spec check(term()) -> none | ok | {bad_shared_option, atom()}.
check(Args) ->
    case shared_opts(Args) of
        {ok, Opts} ->
            try config(Opts) of
                _ -> ok
            catch
                error:{bad_shared_option, Name} -> {bad_shared_option, Name}
            end;
        none ->
            none
    end.

%% The first {shared, Opts} of init's arguments, which may be any term (init accepts anything).
shared_opts([{shared, Opts} | _]) -> {ok, Opts};
shared_opts([_ | Rest]) -> shared_opts(Rest);
shared_opts(_) -> none.

%% The NIF's configuration map from the user's options, a proplist or a map, or {bad_shared_option, Name}
%% (native/nif_session_cache/src/level.rs, Options, reads it: every key present, <<>> for a string not given).
-spec config(term()) -> map().
config(Opts) when is_map(Opts) ->
    config(maps:to_list(Opts));
config(Opts) when is_list(Opts) ->
    %% An improper list would raise bad_generator with its tail, which may be a password.
    _ = try length(Opts) catch error:badarg -> erlang:error({bad_shared_option, shared}) end,
    Given = maps:from_list([option(Opt) || Opt <- Opts]),
    [erlang:error({bad_shared_option, Name}) || Name <- [namespace, keys], not is_map_key(Name, Given)],
    case {is_map_key(url, Given), is_map_key(sentinels, Given), is_map_key(master_name, Given)} of
        {true, false, false} -> ok;
        {false, true, true} -> ok;
        {false, true, false} -> erlang:error({bad_shared_option, master_name});
        {true, false, true} -> erlang:error({bad_shared_option, master_name});
        {true, _, _} -> erlang:error({bad_shared_option, sentinels});
        {false, false, true} -> erlang:error({bad_shared_option, master_name});
        {false, false, false} -> erlang:error({bad_shared_option, url})
    end,
    Urls = maps:get(url, Given, maps:get(sentinels, Given, [])),
    Tls = lists:any(fun(<<"rediss://", _/binary>>) -> true; (_) -> false end, Urls),
    [erlang:error({bad_shared_option, tls}) || is_map_key(tls, Given), not Tls],
    maps:merge(?DEFAULTS, maps:put(url, Urls, maps:remove(sentinels, Given)));
config(_) ->
    erlang:error({bad_shared_option, shared}).

option({url, Url}) ->
    {url, urls(url, Url)};
option({sentinels, Urls}) when is_list(Urls), Urls =/= [], not is_integer(hd(Urls)) ->
    {sentinels, urls(sentinels, Urls)};
option({namespace, Namespace}) when is_binary(Namespace), byte_size(Namespace) > 0, byte_size(Namespace) =< 255 ->
    {namespace, Namespace};
option({keys, Keys}) ->
    case keys(Keys) of
        [_ | _] = Valid -> {keys, Valid};
        _ -> erlang:error({bad_shared_option, keys})
    end;
option({Name, Text}) when Name =:= master_name; Name =:= username ->
    {Name, text(Name, Text)};
option({password, {file, Path}}) ->
    case read(Path) of
        {ok, Text} -> {password, text(password, string:trim(Text, trailing, "\r\n"))};
        error -> erlang:error({bad_shared_option, password})
    end;
option({password, Text}) ->
    {password, text(password, Text)};
option({tls, Tls}) when is_list(Tls); is_map(Tls) ->
    {tls, tls(if is_map(Tls) -> maps:to_list(Tls); true -> Tls end)};
option({Name, N}) ->
    case lists:member(Name, ?COUNTS) andalso is_integer(N) andalso N > 0 andalso N < 1 bsl 32 of
        true -> {Name, N};
        false when Name =:= margin_s, is_integer(N), N >= 1, N < 1 bsl 32 -> {margin_s, N};
        false when is_atom(Name) -> erlang:error({bad_shared_option, Name});
        false -> erlang:error({bad_shared_option, shared})
    end;
option(_) ->
    erlang:error({bad_shared_option, shared}).

%% A URL as a string or a binary, or a list of them (Redis Cluster's seeds, or sentinels), all of one scheme. The
%% NIF parses them again as the redis crate reads them (native/session_share/src/topology.rs, Target::new), and
%% refuses what it cannot read: what is accepted here must be accepted there, or check/1 would pass a URL that
%% init refuses.
urls(Name, Url) ->
    Urls = try flat_urls(Url) catch _:_ -> [] end,
    Schemes = lists:usort([hd(string:split(U, ":")) || U <- Urls]),
    %% Caught whole: a URL may carry a password.
    case Urls =/= [] andalso lists:all(fun(U) -> try url(U) catch _:_ -> false end end, Urls)
        andalso length(Schemes) =:= 1 of
        true -> Urls;
        false -> erlang:error({bad_shared_option, Name})
    end.

%% redis:// or rediss://; a host, not a wildcard address (0.0.0.0 or ::, which the crate refuses); a port that
%% fits in 16 bits; no fragment (rediss://...#insecure would turn the host name check off); a database number as
%% the path, if any; of a query, only the crate's protocol version; user and password, if any, UTF-8 once
%% percent-decoded.
url(Url) ->
    case uri_string:parse(Url) of
        #{scheme := Scheme, host := Host, path := Path} = Parsed
          when (Scheme =:= <<"redis">> orelse Scheme =:= <<"rediss">>), Host =/= <<>> ->
            host(Host)
                andalso port(maps:get(port, Parsed, undefined))
                andalso not is_map_key(fragment, Parsed)
                andalso database(string:trim(Path, both, "/"))
                andalso lists:member(maps:get(query, Parsed, <<>>),
                                     [<<>> | [<<"protocol=", V/binary>> || V <- [<<"2">>, <<"3">>, <<"resp2">>,
                                                                                   <<"resp3">>]]])
                andalso is_binary(unicode:characters_to_binary(
                                    uri_string:percent_decode(maps:get(userinfo, Parsed, <<>>))));
        _ ->
            false
    end.

%% An IPv6 address the crate can read, and no address of every interface (a stricter test than the crate's).
host(Host) ->
    Text = binary_to_list(Host),
    case inet:parse_address(Text) of
        {ok, Address} -> lists:any(fun(Part) -> Part =/= 0 end, tuple_to_list(Address));
        {error, _} -> not lists:member($:, Text)
    end.

port(undefined) -> true;
port(Port) -> is_integer(Port) andalso Port >= 0 andalso Port =< 65535.

database(<<>>) -> true;
database(Db) -> byte_size(Db) =< 18 andalso lists:all(fun(C) -> C >= $0 andalso C =< $9 end, binary_to_list(Db)).

flat_urls(Url) when is_binary(Url) -> [Url];
flat_urls([C | _] = Url) when is_integer(C) -> [unicode:characters_to_binary(Url)];
flat_urls(Urls) when is_list(Urls) -> lists:append([flat_urls(Url) || Url <- Urls]).

%% A non-empty UTF-8 string or binary, as a binary.
text(Name, Text) when is_binary(Text); is_list(Text) ->
    %% Caught whole: a badarg's stack trace would carry the text, which may be a password.
    case try unicode:characters_to_binary(Text) catch _:_ -> error end of
        Bin when is_binary(Bin), Bin =/= <<>> -> Bin;
        _ -> erlang:error({bad_shared_option, Name})
    end;
text(Name, _) ->
    erlang:error({bad_shared_option, Name}).

%% {tls, [{cacertfile, Path}, {certfile, Path}, {keyfile, Path}]}: the PEM of each as [Ca, Cert, Key], <<>> for one
%% not given. A CA or certificate file must hold a certificate, a key file a key; a certificate needs its key.
tls(Opts) ->
    Pem = fun(Name, Types) ->
                  case lists:keyfind(Name, 1, Opts) of
                      false -> <<>>;
                      {_, Path} -> pem(Path, Types)
                  end
          end,
    [erlang:error({bad_shared_option, tls})
     || Opt <- Opts, not (is_tuple(Opt) andalso tuple_size(Opt) =:= 2 andalso
                          lists:member(element(1, Opt), [cacertfile, certfile, keyfile]))],
    Certificate = ['Certificate'],
    Keys = ['RSAPrivateKey', 'ECPrivateKey', 'PrivateKeyInfo'],
    case [Pem(cacertfile, Certificate), Pem(certfile, Certificate), Pem(keyfile, Keys)] of
        [_, <<>>, <<>>] = Files -> Files;
        [_, Cert, Key] = Files when Cert =/= <<>>, Key =/= <<>> -> Files;
        _ -> erlang:error({bad_shared_option, tls})
    end.

pem(Path, Types) ->
    case read(Path) of
        {ok, Text} ->
            case try public_key:pem_decode(Text) catch _:_ -> error end of
                [_ | _] = Entries ->
                    case lists:all(fun(E) -> lists:member(element(1, E), Types) end, Entries) of
                        true -> Text;
                        false -> erlang:error({bad_shared_option, tls})
                    end;
                _ ->
                    erlang:error({bad_shared_option, tls})
            end;
        error ->
            erlang:error({bad_shared_option, tls})
    end.

read(Path) when is_list(Path); is_binary(Path) ->
    case file:read_file(Path) of
        {ok, Text} -> {ok, Text};
        {error, _} -> error
    end;
read(_) ->
    error.

%% 32-byte keys, or {file, Path} to a file of lines of 64 hex digits; the first seals.
keys({file, Path}) ->
    case read(Path) of
        {ok, Text} ->
            Lines = [L || L <- binary:split(Text, [<<"\n">>, <<"\r\n">>], [global, trim_all]), L =/= <<>>],
            keys([try binary:decode_hex(string:trim(L)) catch _:_ -> bad end || L <- Lines]);
        error ->
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
            case nif_session_cache_nif:publish(Store, Id, Payload, TtlMs) of
                auth -> warn_auth();
                _ -> ok
            end;
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
        {miss, _Reason, Warn} ->
            _ = Warn andalso warn_auth(),
            undefined
    end;
lookup(_Store, _Id) ->
    undefined.

%% Once each time Redis starts refusing a store's credentials (the NIF says when): a warning that names the
%% options, never their values. Sessions are then shared no more, and the node works alone, as with Redis down.
warn_auth() ->
    logger:warning("nif_session_cache: Redis refused the shared level's credentials (the username and password "
                   "options, or the user and password in url or sentinels) or their rights (ACL): sessions are not "
                   "shared until they are fixed. Misses are counted as auth in info/1's shared map.", [],
                   #{nif_session_cache => shared_auth}),
    ok.

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
