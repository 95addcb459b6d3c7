%%% Real and synthetic #session{} terms for the benchmark and the tests, on whatever OTP release runs them.
%%%
%%% #session{} is ssl's private record, and its layout moves between releases: a 15-tuple on OTP 25, a 14-tuple on
%%% 27 (compression_method gone, so the master secret moves from element 9 to 8), a 15-tuple again on 29
%%% (max_frag_enum added after srp_username). Nothing here writes a position down. capture/0 makes one real TLS 1.2
%%% handshake through our cache and takes the session that each end stored; layout/2 then finds every field it
%%% needs by its value. A field found in no place, or in more than one, raises {session_layout, Field, Places}, so
%%% a new release fails loudly here instead of drifting into sessions of the wrong shape.
%%%
%%% Sessions hold secrets: the ones made here are random, and nothing here prints one.
-module(nif_session_cache_sessions).

-export([capture/0, layout/2, server_template/0, busy_server_template/0, busy/2, sessions/2, huge/0]).
-export_type([captured/0, known/0, layout/0, template/0]).

-include_lib("public_key/include/public_key.hrl").

-type field() :: session_id | peer_certificate | own_certificates | private_key | master_secret.
%% Where each field sits in this release's #session{}: element numbers.
-type layout() :: #{field() := pos_integer()}.
%% A session and the layout to write fields of its kind.
-type template() :: {tuple(), layout()}.
%% What the handshake was made with: its session id, the listener's certificate and key option.
-type known() :: #{session_id := binary(), server_certificate := binary(), server_key := {atom(), binary()}}.
-type captured() :: #{client := tuple(), server := tuple(), known := known(), layout := layout()}.

%% One full TLS 1.2 handshake on loopback, with ssl restarted on nif_session_cache in both roles, and the
%% session each end stored, read back from our own stores. ssl is stopped afterwards and its session_cb keys
%% unset, so that no store of this handshake outlives the call.
-spec capture() -> captured().
capture() ->
    {ServerOpts, ClientOpts} = nif_session_cache_demo:tls_options(),
    nif_session_cache_demo:restart_ssl(nif_session_cache),
    {Listener, Port} = nif_session_cache_demo:start_listener(ServerOpts, []),
    try
        {Id, _} = nif_session_cache_demo:connect(Port, ClientOpts, []),
        %% Both ends register their session with an asynchronous cast after the handshake.
        ok = nif_session_cache_demo:wait_until(
               fun() -> length(stored(client)) =:= 1 andalso length(stored(server)) =:= 1 end, 5000),
        [Client] = stored(client),
        [Server] = stored(server),
        Known = #{session_id => Id,
                  server_certificate => proplists:get_value(cert, ServerOpts),
                  server_key => proplists:get_value(key, ServerOpts)},
        #{client => Client, server => Server, known => Known, layout => layout({Client, Server}, Known)}
    after
        _ = ssl:close(Listener),
        _ = application:stop(ssl),
        [application:unset_env(ssl, K) || K <- [session_cb, client_session_cb, server_session_cb]]
    end.

%% The element number of each field, from the client's and the server's copy of one session and what the test
%% handshake was made with. The client's copy names the server's certificate as its peer; the server's copy holds
%% the listener's own chain and private key; both hold the same master secret, the one 48-byte binary they share.
-spec layout({tuple(), tuple()}, known()) -> layout().
layout({Client, Server}, #{session_id := Id, server_certificate := Cert, server_key := {KeyType, KeyDer} = KeyOpt}) ->
    Key = public_key:der_decode(KeyType, KeyDer),
    Both = lists:zip3(lists:seq(1, tuple_size(Client)), tuple_to_list(Client), tuple_to_list(Server)),
    #{session_id => only(session_id, [I || {I, C, S} <- Both, C =:= Id, S =:= Id]),
      peer_certificate => only(peer_certificate, [I || {I, C, _} <- Both, C =:= Cert]),
      own_certificates => only(own_certificates, [I || {I, _, [S | _]} <- Both, S =:= Cert]),
      private_key => only(private_key, [I || {I, _, S} <- Both, S =:= Key orelse S =:= KeyOpt]),
      master_secret => only(master_secret, [I || {I, C, S} <- Both, is_binary(C), byte_size(C) =:= 48, C =:= S])}.

%% A plain server session, as a listener without client certificates stores it: no peer certificate, the
%% listener's own chain and private key. sessions/2 gives each copy its own id and master secret.
-spec server_template() -> template().
server_template() ->
    #{server := Server, layout := Layout} = capture(),
    {Server, Layout}.

%% A busy server's session: the server template made busy by busy/2 with a 2048-bit key.
-spec busy_server_template() -> template().
busy_server_template() ->
    busy(2048, server_template()).

%% The template with a 1.1 KB own certificate, a fresh RSA private key term of Bits bits and a 1.2 KB peer
%% certificate, which sessions/2 then makes afresh for each copy.
-spec busy(pos_integer(), template()) -> template().
busy(Bits, {Session, #{own_certificates := Own, private_key := Key, peer_certificate := Peer} = Layout}) ->
    PrivateKey = public_key:generate_key({rsa, Bits, 65537}),
    Fields = [{Own, [crypto:strong_rand_bytes(1100)]}, {Key, PrivateKey}, {Peer, crypto:strong_rand_bytes(1200)}],
    {lists:foldl(fun({At, Value}, S) -> setelement(At, S, Value) end, Session, Fields), Layout}.

%% N distinct sessions of a template as {Id, Session}, each with a fresh 32-byte id and 48-byte master secret,
%% and a fresh 1.2 KB peer certificate where the template has one.
-spec sessions(template(), non_neg_integer()) -> [{binary(), tuple()}].
sessions({Template, #{session_id := IdAt, peer_certificate := PeerAt, master_secret := SecretAt}}, N) ->
    Fresh = [{SecretAt, 48} | [{PeerAt, 1200} || is_binary(element(PeerAt, Template))]],
    [begin
         Id = crypto:strong_rand_bytes(32),
         {Id, lists:foldl(fun({At, Bytes}, S) -> setelement(At, S, crypto:strong_rand_bytes(Bytes)) end,
                          setelement(IdAt, Template, Id), Fresh)}
     end || _ <- lists:seq(1, N)].

%% Sessions far larger than OTP's, of every shape that costs a NIF call work in its own way: long lists, wide
%% tuples, deep nesting, maps, bignums, held parts by the thousand. The tests check that every call on them stays
%% within its budget on a normal scheduler; `make bench` reports how long those calls took ("Scheduler safety").
-spec huge() -> [{atom(), fun(() -> term())}].
huge() ->
    Big = 1 bsl 4000,
    [{list, fun() -> lists:seq(1, 2000000) end},
     {tuple_of_lists, fun() -> list_to_tuple([lists:seq(1, 1000) || _ <- lists:seq(1, 500)]) end},
     {deep, fun() -> lists:foldl(fun(N, Acc) -> {N, Acc, [N]} end, leaf, lists:seq(1, 300000)) end},
     {map, fun() -> maps:from_list([{N, {N, <<N:64>>}} || N <- lists:seq(1, 300000)]) end},
     {bignums, fun() -> {session, [Big + N || N <- lists:seq(1, 20000)]} end},
     {held_field, fun() -> {session, <<1:256>>, [{Big + N, self()} || N <- lists:seq(1, 50000)]} end},
     {pids, fun() -> lists:duplicate(2000, self()) end},
     {references, fun() -> [make_ref() || _ <- lists:seq(1, 300)] end},
     {small_bignums, fun() -> lists:duplicate(1000, 1 bsl 64) end},
     {large_binaries, fun() -> [binary:copy(<<N>>, 5000) || N <- lists:seq(1, 300)] end},
     {shared_binaries, fun() -> maps:from_list([{N, binary:copy(<<N:64>>, 13)} || N <- lists:seq(1, 300000)]) end}].

%%% Internal

%% The sessions in our live stores of one role.
stored(Role) ->
    [S || Ref <- store_refs(Role), S <- nif_session_cache:foldl(fun({_, S}, Acc) -> [S | Acc] end, [], Ref)].

%% Our stores of one role, found by shape in the state of the OTP processes that hold them (ssl_manager for the
%% client, each listener's cache process for the server): the state's references that nif_session_cache accepts.
store_refs(Role) ->
    Holders = case Role of
                  client -> [whereis(ssl_manager)];
                  server -> [Pid || {_, Pid, _, _} <- supervisor:which_children(ssl_server_session_cache_sup),
                                    is_pid(Pid)]
              end,
    [Ref || Pid <- Holders, is_pid(Pid), Ref <- tuple_to_list(sys:get_state(Pid)), is_reference(Ref),
            role_of(Ref) =:= Role].

role_of(Ref) ->
    try nif_session_cache:info(Ref) of
        #{role := Role, terminated := false} -> Role;
        #{} -> none
    catch
        error:badarg -> none
    end.

only(_Field, [Place]) -> Place;
only(Field, Places) -> erlang:error({session_layout, Field, Places}).
