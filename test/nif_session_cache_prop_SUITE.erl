%%% Property: any sequence of callbacks leaves nif_session_cache equal to a model map. A PropEr state machine
%%% (Debian's erlang-proper) generates the sequences: updates, deletes, lookups, select_session, size and foldl,
%%% with both OTP key shapes and junk keys. The run is at least 10,000 commands.
-module(nif_session_cache_prop_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-include_lib("proper/include/proper.hrl").

-export([all/0]).
-export([the_store_matches_a_model_under_random_commands/1,
         keys_at_representation_boundaries_are_the_same_key_exactly_when_they_are_equal/1]).
-export([initial_state/0, command/1, precondition/2, next_state/3, postcondition/3]).
-export([update/2, update_junk/2, delete/1, lookup/1, select_session/1, size/0, fold/0]).

-define(MIN_COMMANDS, 10000).

all() ->
    [the_store_matches_a_model_under_random_commands,
     keys_at_representation_boundaries_are_the_same_key_exactly_when_they_are_equal].

the_store_matches_a_model_under_random_commands(_Config) ->
    put(commands_run, 0),
    Property =
        ?FORALL(Commands, commands(?MODULE),
                begin
                    put(store, nif_session_cache:init([{role, client}])),
                    {History, State, Result} = run_commands(?MODULE, Commands),
                    ok = nif_session_cache:terminate(get(store)),
                    put(commands_run, get(commands_run) + length(Commands)),
                    ?WHENFAIL(ct:pal("history: ~p~nmodel: ~p~nresult: ~p", [History, State, Result]),
                              Result =:= ok)
                end),
    ?assert(proper:quickcheck(Property, [{numtests, 800}, {max_size, 80}, {to_file, user}])),
    ct:pal("~B commands run", [get(commands_run)]),
    ?assert(get(commands_run) >= ?MIN_COMMANDS, {too_few_commands, get(commands_run)}).

%% The key encoder takes different paths on either side of a few boundaries: integers that fit 64 bits and
%% bignums, small and large integers, strings read in one call (up to 255 characters) and cell by cell, Latin-1
%% and wider characters, 0.0 and -0.0. Keys drawn around those boundaries, each inserted with its own value:
%% the store holds exactly as many entries as there are distinct keys, and every key, and a copy of it made
%% through the external format, finds the last value written for it. Distinct means =:= as OTP 27 and later
%% have it, where 0.0 and -0.0 differ (OTP 25's =:=, and so its maps, take them for one): the model is keyed by
%% the external format, the same on every release.
keys_at_representation_boundaries_are_the_same_key_exactly_when_they_are_equal(_Config) ->
    Property =
        ?FORALL(Keys, non_empty(list(boundary_key())),
                begin
                    Store = nif_session_cache:init([]),
                    Writes = lists:zip(Keys, lists:seq(1, length(Keys))),
                    [ok = nif_session_cache:update(Store, K, {session, V}) || {K, V} <- Writes],
                    Model = maps:from_list([{term_to_binary(K), {session, V}} || {K, V} <- Writes]),
                    Found = [{term_to_binary(K), nif_session_cache:lookup(Store, binary_to_term(term_to_binary(K)))}
                             || K <- Keys],
                    Size = nif_session_cache:size(Store),
                    ok = nif_session_cache:terminate(Store),
                    ?WHENFAIL(ct:pal("keys: ~w~nsize ~B, model ~B", [Keys, Size, map_size(Model)]),
                              Size =:= map_size(Model)
                              andalso lists:all(fun({K, Got}) -> Got =:= maps:get(K, Model) end, Found))
                end),
    ?assert(proper:quickcheck(Property, [{numtests, 500}, {max_size, 40}, {to_file, user}])).

boundary_key() ->
    oneof([boundary_integer(), boundary_string(), boundary_float(),
           ?LET({P, I}, {oneof([boundary_string(), boundary_integer()]), boundary_integer()}, {{P, 443}, I})]).

%% Around 2^59 (the VM's small integers), 2^63 and 2^64 (a machine word), on both signs, with a few steps either way.
boundary_integer() ->
    ?LET({Bits, Step, Sign}, {elements([0, 59, 60, 63, 64, 65]), range(-2, 2), elements([1, -1])},
         Sign * ((1 bsl Bits) + Step)).

%% Strings of 254 to 257 characters, of one Latin-1 character or with one wider character at the end.
boundary_string() ->
    ?LET({Len, Char, Wide}, {range(254, 257), elements([$a, 255]), boolean()},
         lists:duplicate(Len - 1, Char) ++ [case Wide of true -> 256; false -> Char end]).

boundary_float() ->
    <<NegativeZero/float>> = <<128, 0:56>>,
    elements([0.0, NegativeZero, 1.0, 1]).

%%% The state machine. The model is a map from key to session.

initial_state() ->
    #{}.

command(_Model) ->
    frequency([{5, {call, ?MODULE, update, [key(), session()]}},
               {1, {call, ?MODULE, update_junk, [junk_key(), session()]}},
               {2, {call, ?MODULE, delete, [any_key()]}},
               {4, {call, ?MODULE, lookup, [any_key()]}},
               {2, {call, ?MODULE, select_session, [oneof([partial_key(), junk_key()])]}},
               {1, {call, ?MODULE, size, []}},
               {1, {call, ?MODULE, fold, []}}]).

precondition(_Model, _Call) ->
    true.

next_state(Model, _Result, {call, ?MODULE, update, [Key, Session]}) ->
    Model#{Key => Session};
next_state(Model, _Result, {call, ?MODULE, delete, [Key]}) ->
    maps:remove(Key, Model);
next_state(Model, _Result, _Call) ->
    Model.

postcondition(_Model, {call, ?MODULE, update, _}, Result) ->
    Result =:= ok;
postcondition(_Model, {call, ?MODULE, update_junk, _}, Result) ->
    Result =:= {error, {badarg, bad_key}};
postcondition(_Model, {call, ?MODULE, delete, _}, Result) ->
    Result =:= ok;
postcondition(Model, {call, ?MODULE, lookup, [Key]}, Result) ->
    Result =:= maps:get(Key, Model, undefined);
postcondition(Model, {call, ?MODULE, select_session, [Partial]}, Result) ->
    lists:sort(Result) =:= lists:sort([S || {{P, _}, S} <- maps:to_list(Model), P =:= Partial]);
postcondition(Model, {call, ?MODULE, size, []}, Result) ->
    Result =:= map_size(Model);
postcondition(Model, {call, ?MODULE, fold, []}, Result) ->
    lists:sort(Result) =:= lists:sort(maps:to_list(Model)).

%%% Commands, run against the store of the current test case.

update(Key, Session) -> nif_session_cache:update(get(store), Key, Session).

update_junk(Key, Session) ->
    try nif_session_cache:update(get(store), Key, Session) of
        Value -> {value, Value}
    catch
        error:Reason -> {error, Reason}
    end.

delete(Key) -> nif_session_cache:delete(get(store), Key).
lookup(Key) -> nif_session_cache:lookup(get(store), Key).
select_session(Partial) -> nif_session_cache:select_session(get(store), Partial).
size() -> nif_session_cache:size(get(store)).
fold() -> nif_session_cache:foldl(fun(Entry, Acc) -> [Entry | Acc] end, [], get(store)).

%%% Generators: small domains, so that keys collide and groups fill up.

key() -> oneof([{partial_key(), session_id()}, session_id()]).

any_key() -> oneof([key(), junk_key()]).

partial_key() ->
    {elements(["a.example", "b.example", {127, 0, 0, 1}, {16#fe80, 0, 0, 0, 0, 0, 0, 1}]), elements([443, 8443])}.

session_id() -> ?LET(N, range(1, 6), <<N:256>>).

session() -> ?LET({N, Secret}, {nat(), binary(48)}, {session, N, Secret}).

junk_key() ->
    elements([#{}, #{a => 1}, <<1:3>>, {ok, <<1:9>>}, lists:foldl(fun(_, A) -> {A} end, x, lists:seq(1, 20))]).
