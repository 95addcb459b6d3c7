%%% Benchmarks, side by side in one VM: nif_session_cache against OTP's own stores, ssl_client_session_cache_db
%%% (ETS, OTP's client store) and ssl_server_session_cache_db (gb_trees, OTP's server store).
%%%
%%% From a shell: `rebar3 shell`, then nif_session_cache_bench:run(). or run(#{sizes => [1000, 100000]}).
%%% Operations are timed with both of OTP's key shapes: client keys {{Host, Port}, SessionId}, grouped by
%%% partial key for select_session, and server keys, a bare SessionId (OTP's server store, gb_trees, holds these).
%%% `make bench` runs it with the defaults and writes bench/results/ (tables and an SVG chart).
%%% It prints tables and returns everything as a map. Times are medians of several rounds; read the ratios, since
%%% absolute times move with the machine's load. Nothing here runs in `make test` except a tiny smoke run.
-module(nif_session_cache_bench).

-export([run/0, run/1]).
%% Helpers that nif_session_cache_bench_handshakes shares.
-export([in_process/1, in_parallel/2, median/1, percentile/2, num/1, ratio/2, short/1, shuffle/1]).

-type options() :: #{sizes => [pos_integer()],
                     keys => [key_shape()],
                     measure => [operation()],
                     rounds => pos_integer(),
                     ops => pos_integer(),
                     hosts => pos_integer(),
                     readers => [pos_integer()],
                     cluster => non_neg_integer(),
                     storm => non_neg_integer(),
                     scale => [pos_integer()],
                     monitor_size => non_neg_integer(),
                     out => file:filename() | none,
                     print => boolean()}.
-type operation() :: lookup_hit | lookup_miss | size | select_session | foldl | update_replace | update_new
                   | delete.
%% client: {{Host, Port}, SessionId}; server: a bare SessionId.
-type key_shape() :: client | server.
-export_type([options/0, operation/0, key_shape/0]).

-define(STORES, [nif_session_cache, ssl_client_session_cache_db, ssl_server_session_cache_db]).

-spec run() -> map().
run() ->
    run(#{}).

-spec run(options()) -> map().
run(Options) ->
    O = maps:merge(#{sizes => [1000, 100000, 1000000], keys => [client, server], measure => operations(),
                     rounds => 5, ops => 20000,
                     hosts => 10000, readers => [1, 2, 4], cluster => 200, storm => 1000,
                     scale => [100000, 1000000, 10000000],
                     monitor_size => 1000000, out => none, print => true}, Options),
    %% A real #session{} of this OTP release, from a TLS 1.2 handshake, filled to the shape of a busy server's.
    Template = nif_session_cache_sessions:busy_server_template(),
    Results = #{machine => machine(),
                session_etf_bytes => byte_size(term_to_binary(element(2, hd(sessions(Template, 1))))),
                operations => [operations(Template, Shape, Size, O)
                               || Shape <- maps:get(keys, O), Size <- maps:get(sizes, O)],
                concurrency => concurrency(Template, O),
                memory => memory(Template, O),
                scale => scale(O),
                cluster => cluster(Template, O),
                scheduler => scheduler(Template, O)},
    maps:get(print, O) andalso print(Results),
    _ = write(maps:get(out, O), Results),
    Results.

%%% Sessions

sessions(Template, N) ->
    nif_session_cache_sessions:sessions(Template, N).

%% The client key shape, spreading sessions over Hosts partial keys.
client_key(Id, Hosts) ->
    <<H:32, _/binary>> = Id,
    {{host(H rem Hosts), 443}, Id}.

key(client, Id, Hosts) -> client_key(Id, Hosts);
key(server, Id, _Hosts) -> Id.

host(N) ->
    "h" ++ integer_to_list(N) ++ ".example.com".

%%% Operations at one size

%% Each store lives in an owner process of its own, filled by messages, so that the timed process's heap holds
%% the store and nothing else (for gb_trees the tree is that heap, which is OTP's real situation). The three
%% stores are measured in turn within every round, in a shuffled order, so that a noisy moment of this shared
%% machine lands on all of them alike. Operations that add or remove entries undo their change, untimed.
operations(Template, Shape, Size, O) ->
    #{ops := Ops, rounds := Rounds, hosts := Hosts} = O,
    %% The stores of the step before may still be being freed (a large one of ours on a thread, ETS's in
    %% chunks): time nothing until that is over.
    _ = settled_memory(total),
    Entries = [{key(Shape, Id, Hosts), S} || {Id, S} <- sessions(Template, Size)],
    Sessions = maps:from_list(Entries),
    Keys = list_to_tuple([K || {K, _} <- Entries]),
    Writes = min(Ops, Size),
    Fresh = [{key(Shape, Id, Hosts), S} || {Id, S} <- sessions(Template, Writes)],
    Replacing = list_to_tuple([S || {_, S} <- lists:sublist(Entries, 1000)]),
    Inputs = fun() ->
                     Sample = [element(rand:uniform(Size), Keys) || _ <- lists:seq(1, Ops)],
                     %% Distinct keys, deleted in random order as OTP deletes them (oldest first). In
                     %% usort's order, each gb_trees delete would walk the path the one before had loaded.
                     Unique = shuffle(lists:sublist(lists:usort(Sample), Writes)),
                     #{sample => Sample,
                       unique => Unique,
                       restore => [{K, maps:get(K, Sessions)} || K <- Unique],
                       replacements => [{K, element(rand:uniform(tuple_size(Replacing)), Replacing)}
                                        || K <- lists:sublist(Sample, Writes)],
                       fresh => Fresh,
                       missing => [K || {K, _} <- Fresh],
                       partials => [{host(rand:uniform(Hosts) - 1), 443} || _ <- lists:seq(1, Ops)],
                       entries => Size}
             end,
    OpNames = [Op || Op <- operations(), lists:member(Op, maps:get(measure, O)), applies(Op, Shape)],
    Owners = [{Mod, start_owner(Mod, Entries)} || Mod <- ?STORES],
    try
        Samples = [{Op, Mod, run_op(Owner, Op, In)}
                   || _ <- lists:seq(1, Rounds), In <- [Inputs()], Op <- OpNames, {Mod, Owner} <- shuffle(Owners)],
        %% Every operation undid its change: each store still holds exactly the entries it was filled with.
        [Size = in_owner(Owner, fun(Mod, Store) -> {Mod:size(Store), Store} end) || {_, Owner} <- Owners],
        Medians = fun(Field) ->
                          [{Op, [{Mod, median_of([Field(S) || {Op1, Mod1, S} <- Samples, Op1 =:= Op, Mod1 =:= Mod])}
                                 || Mod <- ?STORES]}
                           || Op <- OpNames]
                  end,
        #{keys => Shape, size => Size, ops_per_round => Ops, writes_per_round => Writes,
          rows => Medians(fun(S) -> field(ns, S) end), faults => Medians(fun(S) -> field(faults, S) end)}
    after
        [stop_owner(Owner) || {_, Owner} <- Owners]
    end.

%% Every operation timed at each size, in the order they run and are printed.
operations() ->
    [lookup_hit, lookup_miss, size, select_session, foldl, update_replace, update_new, delete].

%% OTP calls select_session only on client stores: a bare session id has no partial key.
applies(select_session, server) -> false;
applies(_, _) -> true.

-spec shuffle([T]) -> [T].
shuffle(List) ->
    [X || {_, X} <- lists:sort([{rand:uniform(), X} || X <- List])].

median_of([n_a | _]) -> n_a;
median_of(Values) -> median(Values).

field(_, n_a) -> n_a;
field(Name, Sample) -> maps:get(Name, Sample).

%% Starts an owner process for a store of Mod filled with Entries, runs Fun(Owner), stops the owner.
with_owner(Mod, Entries, Fun) ->
    Owner = start_owner(Mod, Entries),
    try Fun(Owner) after stop_owner(Owner) end.

start_owner(Mod, Entries) ->
    Owner = spawn_link(fun() -> owner_loop(Mod, Mod:init([{role, client}])) end),
    lists:foreach(fun(Chunk) -> Owner ! {fill, Chunk} end, chunks(Entries, 1000)),
    Owner.

stop_owner(Owner) ->
    unlink(Owner),
    exit(Owner, kill).

owner_loop(Mod, Store) ->
    receive
        {fill, Chunk} ->
            owner_loop(Mod, update_loop(Mod, Store, Chunk));
        {run, From, Fun} ->
            erlang:garbage_collect(),
            {Result, Store1} = Fun(Mod, Store),
            From ! {result, self(), Result},
            owner_loop(Mod, Store1)
    end.

%% Runs Fun(Mod, Store) -> {Result, NewStore} inside the owner.
in_owner(Owner, Fun) ->
    Owner ! {run, self(), Fun},
    receive {result, Owner, Result} -> Result end.

chunks([], _) -> [];
chunks(List, N) when length(List) =< N -> [List];
chunks(List, N) -> {Chunk, Rest} = lists:split(N, List), [Chunk | chunks(Rest, N)].

%% One round of Op (`measured/2`), or n_a where OTP's store lacks the operation. The owner receives only
%% the input Op uses: the others (40k sessions for the writes) would sit in its heap as live data, which every
%% collection the operation's garbage triggers would copy again.
run_op(Owner, Op, AllInputs) ->
    Inputs = maps:with([input(Op)], AllInputs),
    Sample = in_owner(Owner, fun(Mod, Store) ->
                                     case supported(Op, Mod) of
                                         true -> measure(Op, Mod, Store, Inputs);
                                         false -> {n_a, Store}
                                     end
                             end),
    restore(Owner, Op, AllInputs),
    Sample.

%% Puts back what a delete took out, untimed, with the sessions sent only now: in the owner's heap during the
%% timing they would be live data to collect. (Saving them by lookups in the owner instead, as this benchmark
%% once did, brought every store's entries into cache just before their delete, and kept ours from freeing
%% the entries it deleted: a session looked up from our store refers to its entry's bytes.)
restore(Owner, delete, #{restore := Restore}) ->
    in_owner(Owner, fun(Mod, Store) -> {ok, update_loop(Mod, Store, Restore)} end);
restore(_, _, _) ->
    ok.

input(lookup_hit) -> sample;
input(lookup_miss) -> missing;
input(size) -> sample;
input(select_session) -> partials;
input(foldl) -> entries;
input(update_replace) -> replacements;
input(update_new) -> fresh;
input(delete) -> unique.

%% OTP's gb_trees store has no select_session or foldl (optional callbacks), and its update is gb_trees:insert,
%% which crashes on a key already present.
supported(Op, ssl_server_session_cache_db) -> not lists:member(Op, [update_replace, select_session, foldl]);
supported(_, _) -> true.

measure(lookup_hit, Mod, Store, #{sample := Sample}) ->
    read(Store, length(Sample), fun() -> lookup_loop(Mod, Store, Sample) end);
measure(lookup_miss, Mod, Store, #{missing := Missing}) ->
    read(Store, length(Missing), fun() -> lookup_loop(Mod, Store, Missing) end);
measure(size, Mod, Store, #{sample := Sample}) ->
    %% Ten times the calls of the other reads: a call takes tens of nanoseconds, and fewer would time noise.
    Calls = 10 * length(Sample),
    read(Store, Calls, fun() -> size_loop(Mod, Store, Calls) end);
measure(select_session, Mod, Store, #{partials := Partials}) ->
    read(Store, length(Partials), fun() -> select_loop(Mod, Store, Partials) end);
measure(foldl, Mod, Store, #{entries := Entries}) ->
    read(Store, Entries, fun() -> Mod:foldl(fun(_, Acc) -> Acc + 1 end, 0, Store) end);
measure(update_replace, Mod, Store, #{replacements := Replacements}) ->
    measured(length(Replacements), fun() -> update_loop(Mod, Store, Replacements) end);
measure(update_new, Mod, Store, #{fresh := Fresh}) ->
    {Sample, Store1} = measured(length(Fresh), fun() -> update_loop(Mod, Store, Fresh) end),
    {Sample, delete_loop(Mod, Store1, [K || {K, _} <- Fresh])};
measure(delete, Mod, Store, #{unique := Unique}) ->
    measured(length(Unique), fun() -> delete_loop(Mod, Store, Unique) end).

read(Store, N, Fun) ->
    {element(1, measured(N, Fun)), Store}.

%% Runs Fun, N operations, and returns {#{ns, faults}, Fun's result}: ns and minor page faults per operation.
%% Faults are counted for the whole OS process (an Erlang process cannot name the scheduler thread it runs on):
%% while an owner runs its timed loop, the others wait, so they are that loop's, give or take the VM's own
%% housekeeping. n_a where there is no /proc/self/stat.
measured(N, Fun) ->
    Faults0 = minor_faults(),
    {Us, Result} = timer:tc(Fun),
    Faults = case {Faults0, minor_faults()} of
                 {F0, F1} when is_integer(F0), is_integer(F1) -> (F1 - F0) / max(N, 1);
                 _ -> n_a
             end,
    {#{ns => Us * 1000 / max(N, 1), faults => Faults}, Result}.

%% minflt, the tenth field of /proc/self/stat; the second, the command name, may hold spaces.
minor_faults() ->
    case file:read_file("/proc/self/stat") of
        {ok, Stat} ->
            [_, AfterName] = string:split(Stat, ") ", trailing),
            binary_to_integer(lists:nth(8, string:lexemes(AfterName, " ")));
        {error, _} ->
            n_a
    end.

%% gb_trees' update and delete return the new store; the others are mutable and return ok or true.
store_after(ssl_server_session_cache_db, _Old, New) -> New;
store_after(_, Store, _) -> Store.

lookup_loop(_, _, []) -> ok;
lookup_loop(Mod, Store, [K | Ks]) -> _ = Mod:lookup(Store, K), lookup_loop(Mod, Store, Ks).

update_loop(_, Store, []) -> Store;
update_loop(Mod, Store, [{K, S} | Rest]) -> update_loop(Mod, store_after(Mod, Store, Mod:update(Store, K, S)), Rest).

delete_loop(_, Store, []) -> Store;
delete_loop(Mod, Store, [K | Ks]) -> delete_loop(Mod, store_after(Mod, Store, Mod:delete(Store, K)), Ks).

size_loop(_, _, 0) -> ok;
size_loop(Mod, Store, N) -> _ = Mod:size(Store), size_loop(Mod, Store, N - 1).

select_loop(_, _, []) -> ok;
select_loop(Mod, Store, [P | Ps]) -> _ = Mod:select_session(Store, P), select_loop(Mod, Store, Ps).

timed(N, Fun) ->
    {Us, _} = timer:tc(Fun),
    Us * 1000 / max(N, 1).

%%% Concurrent lookups while the owner writes

concurrency(_Template, #{sizes := []}) ->
    skipped;
concurrency(Template, O) ->
    Size = min(100000, lists:max(maps:get(sizes, O))),
    #{readers := Readers, ops := Ops, rounds := Rounds, hosts := Hosts} = O,
    Entries = [{client_key(Id, Hosts), S} || {Id, S} <- sessions(Template, Size)],
    Keys = list_to_tuple([K || {K, _} <- Entries]),
    #{size => Size,
      rows => [{R, [{Mod, median([concurrent_round(Mod, Entries, Keys, R, Ops) || _ <- lists:seq(1, Rounds)])}
                    || Mod <- [nif_session_cache, ssl_client_session_cache_db]]}
               || R <- Readers]}.

%% ns per lookup, per reader, with R readers at once while the owner (the store's creator, the only process
%% allowed to write) keeps replacing sessions until every reader is done.
concurrent_round(Mod, Entries, Keys, R, Ops) ->
    Replacements = list_to_tuple(lists:sublist(Entries, 1000)),
    with_owner(Mod, Entries, fun(Owner) ->
        in_owner(Owner, fun(M, Store) ->
            Parent = self(),
            Pids = [spawn_link(fun() ->
                                       Sample = [element(rand:uniform(tuple_size(Keys)), Keys) || _ <- lists:seq(1, Ops)],
                                       Parent ! {ready, self()},
                                       receive go -> ok end,
                                       Parent ! {done, self(), timed(Ops, fun() -> lookup_loop(M, Store, Sample) end)}
                               end) || _ <- lists:seq(1, R)],
            [receive {ready, P} -> ok end || P <- Pids],
            [P ! go || P <- Pids],
            Times = write_until_done(M, Store, Replacements, Pids, []),
            {lists:sum(Times) / length(Times), Store}
        end)
    end).

write_until_done(_, _, _, [], Times) ->
    Times;
write_until_done(Mod, Store, Replacements, Readers, Times) ->
    receive
        {done, P, T} -> write_until_done(Mod, Store, Replacements, lists:delete(P, Readers), [T | Times])
    after 0 ->
        {K, S} = element(rand:uniform(tuple_size(Replacements)), Replacements),
        _ = Mod:update(Store, K, S),
        write_until_done(Mod, Store, Replacements, Readers, Times)
    end.

%%% Memory

%% Bytes per session: the growth of erlang:memory(total) when an owner process fills a store (the certificate
%% payloads, shared with the sessions this process holds, are not in it), and the store's own figure.
%% Two sessions: the benchmark's busy one (a peer certificate, a 2048-bit key), with client keys, and a plain
%% server session, OTP's own from a TLS 1.2 handshake without a client certificate (no peer certificate; the
%% listener's certificate chain and key shared by all), with server keys: the case nginx documents.
memory(_Template, #{sizes := []}) ->
    skipped;
memory(Template, O) ->
    Size = min(100000, lists:max(maps:get(sizes, O))),
    Busy = memory_of([{client_key(Id, maps:get(hosts, O)), S} || {Id, S} <- sessions(Template, Size)]),
    Plain = memory_of(nif_session_cache_sessions:sessions(nif_session_cache_sessions:server_template(), Size)),
    Busy#{plain => Plain}.

memory_of(Entries) ->
    Size = length(Entries),
    Etf = lists:sum([byte_size(term_to_binary(S)) || {_, S} <- lists:sublist(Entries, 1000)]) / min(1000, Size),
    %% Measured: what the VM holds outside process heaps (ETS tables, binaries, resource objects, NIF
    %% allocations), plus the owner's own memory (for gb_trees, the tree is its heap). The benchmark process's
    %% heap, which holds the sessions and resizes with every collection, is left out.
    Measure = fun(Mod) ->
                      Before = settled_memory(system),
                      with_owner(Mod, Entries, fun(Owner) ->
                          {Reported, Owned} =
                              in_owner(Owner, fun(M, Store) ->
                                                      erlang:garbage_collect(),
                                                      {memory, Own} = process_info(self(), memory),
                                                      {{reported_bytes(M, Store), Own}, Store}
                                              end),
                          {(settled_memory(system) - Before + Owned) / Size, Reported / Size}
                      end)
              end,
    #{size => Size, etf_bytes => Etf, stores => [{Mod, Measure(Mod)} || Mod <- ?STORES]}.

%% erlang:memory(Type) once it has stopped moving: stores of earlier steps are freed in the background (a
%% large store on a thread of its own), and a measurement taken meanwhile would count their release.
settled_memory(Type) ->
    erlang:garbage_collect(),
    settled_memory(Type, erlang:memory(Type), 50).

settled_memory(_, Last, 0) ->
    Last;
settled_memory(Type, Last, Tries) ->
    timer:sleep(200),
    case erlang:memory(Type) of
        Now when abs(Now - Last) =< Last div 1000 -> Now;
        Now -> settled_memory(Type, Now, Tries - 1)
    end.

reported_bytes(nif_session_cache, Store) ->
    #{bytes := Entries, index_bytes := Structures} = nif_session_cache:info(Store),
    Entries + Structures;
reported_bytes(ssl_client_session_cache_db, Table) -> ets:info(Table, memory) * erlang:system_info(wordsize);
reported_bytes(ssl_server_session_cache_db, Tree) -> erts_debug:flat_size(Tree) * erlang:system_info(wordsize).

%%% Scale: our store alone, with up to 10M plain server sessions

%% Memory per session and time per lookup at each size of `scale`, with plain server sessions (server keys), our
%% store alone: OTP's stores would need about 14 GB at 10M. The owner makes each session as it inserts it, from
%% its number, so that no list of millions of sessions is held: its id is the SHA-256 of the number, and its
%% master secret fresh. Lookups are of random numbers, 20,000 per round, median of five rounds, from another
%% process, as a listener's connections read.
scale(#{scale := []}) ->
    skipped;
scale(#{scale := Sizes}) ->
    [{Size, scale_at(Size)} || Size <- Sizes].

scale_at(Size) ->
    {Template, #{session_id := IdAt, master_secret := SecretAt}} = nif_session_cache_sessions:server_template(),
    Session = fun(I) ->
                      Id = scale_id(I),
                      {Id, setelement(SecretAt, setelement(IdAt, Template, Id), crypto:strong_rand_bytes(48))}
              end,
    Before = settled_memory(system),
    Self = self(),
    Owner = spawn_link(fun() ->
                               Store = nif_session_cache:init([{role, server}]),
                               scale_fill(Store, Session, Size),
                               erlang:garbage_collect(),
                               {memory, Own} = process_info(self(), memory),
                               Self ! {filled, self(), Store, Own},
                               receive stop -> nif_session_cache:terminate(Store) end
                       end),
    {Store, Own} = receive {filled, Owner, Filled, OwnerBytes} -> {Filled, OwnerBytes} end,
    #{entries := Size, bytes := Bytes, index_bytes := Index} = nif_session_cache:info(Store),
    Measured = (settled_memory(system) - Before + Own) / Size,
    Time = fun(Keys) ->
                   Ns = [element(1, timer:tc(fun() -> lookup_loop(nif_session_cache, Store, Keys) end)) * 1000 / length(Keys)
                         || _ <- lists:seq(1, 5)],
                   median(Ns)
           end,
    Hit = Time([scale_id(rand:uniform(Size)) || _ <- lists:seq(1, 20000)]),
    Miss = Time([scale_id(Size + rand:uniform(Size)) || _ <- lists:seq(1, 20000)]),
    true = nif_session_cache:lookup(Store, scale_id(Size)) =/= undefined,
    unlink(Owner),
    Owner ! stop,
    #{measured_bytes => Measured, reported_bytes => (Bytes + Index) / Size, lookup_hit_ns => Hit,
      lookup_miss_ns => Miss}.

scale_fill(_, _, 0) ->
    ok;
scale_fill(Store, Session, I) ->
    {Id, S} = Session(I),
    ok = nif_session_cache:update(Store, Id, S),
    scale_fill(Store, Session, I - 1).

scale_id(I) ->
    crypto:hash(sha256, <<I:64>>).

listener_caches() ->
    [Pid || {_, Pid, _, _} <- supervisor:which_children(ssl_server_session_cache_sup), is_pid(Pid)].

%%% The shared level (README, "Cluster")

%% Two listeners of this VM whose stores share through a redis-server started here, as two nodes would: N
%% sessions made on one are resumed on the other (each once, so each goes to Redis), beside resumptions on the
%% listener that made them and full handshakes. Then, on stores of the bench process, with the busy server
%% template: the remote lookup's latency, through plain Redis and through a TLS Redis, the cost of the
%% write-through to update, and a flood of random ids. Then the reconnect storm, with sharing and without.
cluster(_Template, #{cluster := 0}) ->
    skipped;
cluster(Template, #{cluster := N, storm := Storm}) ->
    case os:find_executable("redis-server") of
        false -> skipped;
        _ -> with_redis(fun(Url) -> cluster(Template, N, Storm, Url) end)
    end.

cluster(Template, N, Storm, Url) ->
    Shared = [{url, Url}, {namespace, <<"bench">>}, {keys, [crypto:strong_rand_bytes(32)]},
              {timeout_ms, 100}, {max_reads_per_s, 100000}],
    ok = application:set_env(ssl, server_session_cb_init_args, [{shared, Shared}]),
    try
        handshakes_across(N) ++ stores_across(Template, Shared, N) ++ tls_lookup(Template, Shared, N)
            ++ flood(N, Shared) ++ storm(Storm, Shared, Url)
    after
        application:unset_env(ssl, server_session_cb_init_args),
        nif_session_cache_demo:restart_ssl(nif_session_cache)
    end.

handshakes_across(N) ->
    nif_session_cache_demo:restart_ssl(nif_session_cache),
    {ServerOpts, ClientOpts} = nif_session_cache_demo:tls_options(),
    {A, PortA} = nif_session_cache_demo:start_listener(ServerOpts, []),
    {B, PortB} = nif_session_cache_demo:start_listener(ServerOpts, []),
    %% Both behind one address, as behind a load balancer: a client offers a session only where it made it.
    Proxy = nif_session_cache_proxy:start(),
    Connect = fun(Port, Extra) ->
                      ok = nif_session_cache_proxy:target(Proxy, Port),
                      element(1, nif_session_cache_demo:connect(Proxy, ClientOpts, Extra))
              end,
    Ids = [Connect(PortA, [{reuse_sessions, save}]) || _ <- lists:seq(1, 2 * N)],
    timer:sleep(500), % the writes to Redis are asynchronous
    Rate = fun(Port, Offered) ->
                   {Us, Got} = timer:tc(fun() -> [Connect(Port, [{reuse_session, Id}]) || Id <- Offered] end),
                   {length(Offered) * 1000000 / Us, length([I || {I, I} <- lists:zip(Got, Offered)]) / length(Offered)}
           end,
    %% In four rounds, the two kinds taking turns, so that both see the same moments of this shared machine;
    %% each session is offered once, so each resumption across nodes goes to Redis.
    Rounds = [lists:split(length(Chunk) div 2, Chunk) || Chunk <- chunks(Ids, max(2, length(Ids) div 4))],
    Samples = [{Rate(PortA, Local), Rate(PortB, Cross)} || {Local, Cross} <- Rounds],
    LocalRate = median([R || {{R, _}, _} <- Samples]),
    CrossRate = median([R || {_, {R, _}} <- Samples]),
    LocalShare = lists:min([S || {{_, S}, _} <- Samples]),
    CrossShare = lists:min([S || {_, {_, S}} <- Samples]),
    {FullUs, _} = timer:tc(fun() -> [Connect(PortA, [{reuse_sessions, false}]) || _ <- lists:seq(1, N)] end),
    ok = ssl:close(A),
    ok = ssl:close(B),
    [{resumed_on_the_node_per_s, LocalRate, LocalShare},
     {resumed_across_nodes_per_s, CrossRate, CrossShare},
     {full_per_s, N * 1000000 / FullUs, 0.0}].

stores_across(Template, Shared, N) ->
    Sessions = nif_session_cache_sessions:sessions(Template, N),
    Time = fun(Fun) -> element(1, timer:tc(Fun)) * 1000 / N end,
    {Writer, Plain} = in_owner(fun() -> {nif_session_cache:init([{role, server}, {shared, Shared}]),
                                         nif_session_cache:init([{role, server}])} end),
    %% Five rounds of N inserts each, alternated, medians: one round of a few hundred inserts is a millisecond,
    %% and the shared store's writer thread, its redis-server and the other scheduler share the second core.
    %% The first round's sessions are the ones read back from Redis below.
    Timed = [{in_owner_time(Writer, ForShared, Time), in_owner_time(Plain, sessions(Template, N), Time)}
             || ForShared <- [Sessions | [sessions(Template, N) || _ <- lists:seq(2, 5)]]],
    UpdateShared = median([T || {T, _} <- Timed]),
    UpdatePlain = median([T || {_, T} <- Timed]),
    timer:sleep(500),
    Reader = nif_session_cache:init([{role, server}, {shared, Shared}]),
    Lookups = lists:sort([element(1, timer:tc(fun() -> found(nif_session_cache:lookup(Reader, Id)) end))
                          || {Id, _} <- Sessions]),
    Flood = nif_session_cache:init([{role, server}, {shared, lists:keystore(max_reads_per_s, 1, Shared,
                                                                              {max_reads_per_s, 1000})}]),
    FloodNs = Time(fun() -> [undefined = nif_session_cache:lookup(Flood, crypto:strong_rand_bytes(32))
                             || _ <- lists:seq(1, N)] end),
    PlainMissNs = Time(fun() -> [undefined = nif_session_cache:lookup(Plain, crypto:strong_rand_bytes(32))
                                 || _ <- lists:seq(1, N)] end),
    #{shared := #{misses := #{absent := Asked}}} = nif_session_cache:info(Flood),
    [{remote_lookup_us, percentile(Lookups, 50), percentile(Lookups, 99)},
     {update_ns, UpdateShared, UpdatePlain},
     {flood_lookup_ns, FloodNs, PlainMissNs, Asked, N}].

%% Resumptions on a listener while two processes flood its cache process with made-up session ids, the call a
%% ClientHello offering an unknown id makes (ssl_server_session_cache:reuse_session/2): with `shared` (each id a
%% local miss, and up to max_reads_per_s of them a Redis round trip), without it, and without a flood.
flood(N, Shared) ->
    [{flood_resumed_per_s, flooded_rate(N, none), flooded_rate(N, plain), flooded_rate(N, Shared)}].

flooded_rate(N, Level) ->
    case Level of
        none -> application:unset_env(ssl, server_session_cb_init_args);
        plain -> application:unset_env(ssl, server_session_cb_init_args);
        Shared -> application:set_env(ssl, server_session_cb_init_args, [{shared, Shared}])
    end,
    nif_session_cache_demo:restart_ssl(nif_session_cache),
    {ServerOpts, ClientOpts} = nif_session_cache_demo:tls_options(),
    {Listener, Port} = nif_session_cache_demo:start_listener(ServerOpts, []),
    {Id, _} = nif_session_cache_demo:connect(Port, ClientOpts, []),
    timer:sleep(200),
    [Cache] = listener_caches(),
    Flooders = [spawn_link(fun() -> flood_loop(Cache) end) || Level =/= none, _ <- [1, 2]],
    {Us, Got} = timer:tc(fun() -> [element(1, nif_session_cache_demo:connect(Port, ClientOpts, []))
                                   || _ <- lists:seq(1, N)] end),
    [begin unlink(F), exit(F, kill) end || F <- Flooders],
    ok = ssl:close(Listener),
    N = length([G || G <- Got, G =:= Id]),
    N * 1000000 / Us.

flood_loop(Cache) ->
    _ = ssl_server_session_cache:reuse_session(Cache, crypto:strong_rand_bytes(32)),
    flood_loop(Cache).

%% Lookups that go to Redis (each session read once, so none is answered by the replay cache) through the plain
%% redis-server and through one that speaks only TLS (certificates made by openssl for the run, the CA given in
%% tls), in alternated rounds: p50 and p99 of each, in microseconds.
tls_lookup(Template, Plain, N) ->
    case os:find_executable("openssl") of
        false ->
            [];
        _ ->
            Dir = filename:join(os:getenv("TMPDIR", "/tmp"), "nif_session_cache_bench_tls"),
            Pki = nif_session_cache_redis:pki(filename:join(Dir, "pki")),
            Port = nif_session_cache_redis:free_port(),
            _ = nif_session_cache_redis:start_tls(Port, Dir, Pki, false),
            Tls = lists:keystore(url, 1, Plain, {url, io_lib:format("rediss://127.0.0.1:~b/", [Port])})
                ++ [{tls, [{cacertfile, maps:get(ca, Pki)}]}],
            try
                %% Six alternated rounds: on this kind of machine a round trip's wake-ups alone move a
                %% round's median by a factor of five from one round to the next.
                Rounds = [{remote_lookups(Template, Plain, max(1, N div 6)), remote_lookups(Template, Tls, max(1, N div 6))}
                          || _ <- lists:seq(1, 6)],
                PlainUs = lists:sort(lists:append([P || {P, _} <- Rounds])),
                TlsUs = lists:sort(lists:append([T || {_, T} <- Rounds])),
                [{tls_lookup_us, percentile(PlainUs, 50), percentile(PlainUs, 99),
                  percentile(TlsUs, 50), percentile(TlsUs, 99)}]
            after
                nif_session_cache_redis:kill(Port)
            end
    end.

%% N sessions written through a store with Shared (owned by a process of its own, stopped at the end), then each
%% looked up once through another: microseconds each. The reader's connection is made first, by the lookup of a
%% made-up id, so that no timed lookup pays for it: with six rounds of a few dozen lookups each, six TLS
%% handshakes with Redis were the p99.
remote_lookups(Template, Shared, N) ->
    Sessions = nif_session_cache_sessions:sessions(Template, max(1, N)),
    Self = self(),
    Owner = spawn_link(fun() ->
                               Store = nif_session_cache:init([{role, server}, {shared, Shared}]),
                               [ok = nif_session_cache:update(Store, Id, S) || {Id, S} <- Sessions],
                               Self ! {self(), Store},
                               receive stop -> ok end
                       end),
    Writer = receive {Owner, Store} -> Store end,
    ok = nif_session_cache_demo:wait_until(
           fun() -> maps:get(sets, maps:get(shared, nif_session_cache:info(Writer))) >= length(Sessions) end, 30000),
    Reader = nif_session_cache:init([{role, server}, {shared, Shared}]),
    undefined = nif_session_cache:lookup(Reader, crypto:strong_rand_bytes(32)),
    Times = [element(1, timer:tc(fun() -> found(nif_session_cache:lookup(Reader, Id)) end)) || {Id, _} <- Sessions],
    Owner ! stop,
    Times.

%% The reconnect storm: three listeners of this VM as three nodes, Clients clients make a full handshake on A, A
%% closes, and every client comes back on B or C offering its session ({reuse_session, {Id, Data}}), from 8
%% processes (a reconnect that fails counts as not resumed). With the shared level (at a read rate of a hundredth
%% of the storm's clients a second), and without: the fraction resumed, the wall time until every client is back,
%% and CPU seconds per reconnect, this VM's (clients included, as they are in both) and redis-server's.
storm(0, _Shared, _Url) ->
    [];
storm(Clients, Shared, Url) ->
    #{port := Port} = uri_string:parse(Url),
    Bound = lists:keystore(max_reads_per_s, 1, Shared, {max_reads_per_s, max(10, Clients div 100)}),
    [{storm, Clients, storm_run(Clients, none, Port), storm_run(Clients, Bound, Port)}].

storm_run(Clients, Level, RedisPort) ->
    case Level of
        none -> application:unset_env(ssl, server_session_cb_init_args);
        _ -> application:set_env(ssl, server_session_cb_init_args, [{shared, Level}])
    end,
    nif_session_cache_demo:restart_ssl(nif_session_cache),
    {ServerOpts, ClientOpts0} = nif_session_cache_demo:tls_options(),
    ClientOpts = [{reuse_sessions, false} | ClientOpts0],
    [{A, PortA}, {B, PortB}, {C, PortC}] = [nif_session_cache_demo:start_listener(ServerOpts, [{backlog, 1024}])
                                            || _ <- [a, b, c]],
    %% A full handshake the busy machine did not finish (the acceptor gives each 5 s) is tried again.
    Sessions = nif_session_cache_demo:pmap(fun(_) -> nif_session_cache_demo:full_session(PortA, ClientOpts, 3) end,
                                         lists:seq(1, Clients)),
    ok = case Level of none -> ok; _ -> published(A, Clients) end,
    ok = ssl:close(A),
    {Cpu0, _} = erlang:statistics(runtime),
    Redis0 = redis_cpu_s(RedisPort),
    Start = erlang:monotonic_time(microsecond),
    Back = nif_session_cache_demo:pmap(fun({I, {Id, _} = Session}) ->
                        Port = case I rem 2 of 0 -> PortB; 1 -> PortC end,
                        case nif_session_cache_demo:offer(Port, ClientOpts, Session) of
                            {ok, {Id, _}} -> true;
                            _ -> false
                        end
                end, lists:enumerate(Sessions)),
    WallMs = (erlang:monotonic_time(microsecond) - Start) / 1000,
    {Cpu1, _} = erlang:statistics(runtime),
    RedisS = redis_cpu_s(RedisPort) - Redis0,
    [ok = ssl:close(L) || L <- [B, C]],
    #{resumed => length([R || R <- Back, R]) / Clients, wall_ms => WallMs,
      cpu_s_per_reconnect => ((Cpu1 - Cpu0) / 1000 + RedisS) / Clients}.

%% Waits until Listener's store has published N sessions.
published(Listener, N) ->
    nif_session_cache_demo:wait_until(
      fun() ->
              {ok, #{shared := #{sets := Sets}}} = nif_session_cache:listener_store(Listener),
              Sets >= N
      end, 60000).

%% redis-server's CPU seconds so far (INFO cpu: used_cpu_sys + used_cpu_user).
redis_cpu_s(Port) ->
    Info = nif_session_cache_redis:redis_cli(Port, "info cpu"),
    lists:sum([list_to_float(V) || {match, [V]} <- [re:run(Info, Key ++ ":([0-9.]+)", [{capture, all_but_first, list}])
                                                    || Key <- ["used_cpu_sys", "used_cpu_user"]]]).

%% A remote lookup must find the session, or the latency measured would be a miss's.
found(undefined) -> erlang:error(remote_session_not_found);
found(_Session) -> ok.

%% Stores made by (and so owned by) a process that stays alive, which then does the timed updates.
in_owner(Make) ->
    Parent = self(),
    Owner = spawn(fun() -> Parent ! {self(), Make()}, owner_loop() end),
    receive {Owner, Stores} -> put(bench_owner, Owner), Stores end.

owner_loop() ->
    receive {run, From, Fun} -> From ! {self(), Fun()}, owner_loop(); stop -> ok end.

in_owner_time(Store, Sessions, Time) ->
    Owner = get(bench_owner),
    Owner ! {run, self(), fun() -> Time(fun() -> [ok = nif_session_cache:update(Store, Id, S) || {Id, S} <- Sessions] end) end},
    receive {Owner, Ns} -> Ns end.

with_redis(Fun) ->
    Port = nif_session_cache_redis:free_port(),
    _ = nif_session_cache_redis:start(Port, filename:join(os:getenv("TMPDIR", "/tmp"), "nif_session_cache_bench_redis"), []),
    try
        Fun(iolist_to_binary(io_lib:format("redis://127.0.0.1:~b/", [Port])))
    after
        nif_session_cache_redis:stop(Port),
        case get(bench_owner) of undefined -> ok; Owner -> Owner ! stop end
    end.

%%% Scheduler safety

%% Runs the operations that grow with the store on a large one under erlang:system_monitor long_schedule 1 ms,
%% and reports every event (a NIF call of 1 ms or more would show as one); then every call on each of the suite's
%% huge sessions (huge_calls/0). Reports, never asserts: the tests hold the budget by counting work.
scheduler(_Template, #{monitor_size := 0}) ->
    skipped;
scheduler(Template, #{monitor_size := N, hosts := Hosts}) ->
    in_process(fun() ->
        Store = nif_session_cache:init([{role, client}]),
        Big = {"one.example", 443},
        [ok = nif_session_cache:update(Store, client_key(Id, Hosts), S) || {Id, S} <- sessions(Template, N)],
        {Session, _} = Template,
        [ok = nif_session_cache:update(Store, {Big, <<I:256>>}, Session) || I <- lists:seq(1, 5000)],
        Dropper = large_store_owner(Template, N, Hosts),
        Steps = [{foldl, fun() -> nif_session_cache:foldl(fun(_, A) -> A + 1 end, 0, Store) end},
                 {select_session_5000, fun() -> nif_session_cache:select_session(Store, Big) end},
                 {terminate, fun() -> nif_session_cache:terminate(Store) end},
                 {drop_last_reference, fun() -> drop(Dropper, N) end}],
        Monitored = [monitored(Name, Fun) || {Name, Fun} <- Steps],
        maps:merge(#{entries => N, steps => Monitored}, huge_calls())
    end).

%% Every call on each huge session of the suite (nif_session_cache_sessions:huge/0), made through the NIFs one by
%% one, so that the part each ran on a normal scheduler is timed apart from what went on on a dirty one: per
%% operation, the longest normal-scheduler call and the longest dirty one (us), with long_schedule events of 1 ms
%% or more and the store's own accounting of its budget.
huge_calls() ->
    %% Each in a process of its own, with a heap large enough that it collects no garbage meanwhile: a time is
    %% then the call's alone.
    Rows = [in_process(fun() -> huge_calls(Kind, Make()) end, [{min_heap_size, 40000000}])
            || {Kind, Make} <- nif_session_cache_sessions:huge()],
    #{huge => [Row || {Row, _} <- Rows], huge_events => lists:append([Events || {_, Events} <- Rows])}.

huge_calls(Kind, Session) ->
    %% Watched once the session is built: building it is Erlang code, not ours.
    Previous = erlang:system_monitor(self(), [{long_schedule, 1}]),
    Key = {{"host", 443}, <<7:256>>},
    Store = nif_session_cache:init([]),
    ok = nif_session_cache:update(Store, {{"host", 443}, <<1:256>>}, {session, <<1:256>>}),
    Update = fun() -> split_time(fun() -> nif_session_cache_nif:update(Store, Key, Session) end,
                            fun({dirty, Resume, Items}) -> nif_session_cache_nif:update_dirty(Store, Key, Resume, Items);
                               (_) -> none end) end,
    Calls = [{update, Update},
             {lookup, fun() -> split_time(fun() -> nif_session_cache_nif:lookup(Store, Key) end,
                                     fun(dirty) -> nif_session_cache_nif:lookup_dirty(Store, Key); (_) -> none end) end},
             {foldl, fun() -> split_chunks(fun(From) -> nif_session_cache_nif:fold(Store, From) end,
                                           fun(From) -> nif_session_cache_nif:fold_dirty(Store, From) end, 0) end},
             {select_session, fun() -> split_chunks(fun(start) -> nif_session_cache_nif:select(Store, {"host", 443});
                                                       (Cursor) -> nif_session_cache_nif:next(Cursor) end,
                                                    fun(Cursor) -> nif_session_cache_nif:next_dirty(Cursor) end, start) end},
             {replace, Update},
             {delete, fun() -> split_time(fun() -> nif_session_cache_nif:delete(Store, Key) end, fun(_) -> none end) end}],
    Times = [{Op, Call()} || {Op, Call} <- Calls],
    _ = erlang:system_monitor(Previous),
    #{scheduler := #{budget := Budget, largest_call := Largest, dirty_calls := Dirty}} = nif_session_cache:info(Store),
    Events = [{Kind, Info} || {Pid, Info} <- collect_long_schedules(), Pid =:= self()],
    {{Kind, Times, #{budget => Budget, largest_call => Largest, dirty_calls => Dirty}}, Events}.

%% {NormalUs, DirtyUs}: Normal() timed, and then Dirty(Answer) if it goes on on a dirty scheduler (none if not).
split_time(Normal, Dirty) ->
    {NormalUs, Answer} = timer:tc(Normal),
    {DirtyUs, Done} = timer:tc(fun() -> Dirty(Answer) end),
    {NormalUs, case Done of none -> 0; _ -> DirtyUs end}.

%% The longest of each kind of call of a walk in chunks (a fold's slots, or a select's cursor).
split_chunks(Normal, Dirty, From) ->
    split_chunks(Normal, Dirty, From, {0, 0}).

split_chunks(Normal, Dirty, From, {MaxNormal, MaxDirty}) ->
    {NormalUs, Answer} = timer:tc(fun() -> Normal(From) end),
    {DirtyUs, Chunk} = case Answer of
                           dirty -> timer:tc(fun() -> Dirty(From) end);
                           _ -> {0, Answer}
                       end,
    Max = {max(MaxNormal, NormalUs), max(MaxDirty, DirtyUs)},
    case Chunk of
        {_, done} -> Max;
        {_, Next} -> split_chunks(Normal, Dirty, Next, Max)
    end.

%% Runs Fun with long_schedule monitoring on (>= 1 ms, any process), and returns its wall time and the events.
monitored(Name, Fun) ->
    Previous = erlang:system_monitor(self(), [{long_schedule, 1}]),
    {Us, _} = timer:tc(Fun),
    _ = erlang:system_monitor(Previous),
    {Name, Us div 1000, collect_long_schedules()}.

%% A process that builds a store of N entries and drops it (its only reference) when told.
large_store_owner(Template, N, Hosts) ->
    Parent = self(),
    Pid = spawn(fun() ->
        Store = nif_session_cache:init([]),
        [ok = nif_session_cache:update(Store, client_key(Id, Hosts), S) || {Id, S} <- sessions(Template, N)],
        %% Leave only the store reference in the heap, so that exiting measures the store's release, not
        %% the freeing of a heap that built a million sessions.
        erlang:garbage_collect(),
        Parent ! {built, self()},
        receive drop -> ok end
    end),
    receive {built, Pid} -> Pid end.

%% Kills the owner's only reference and waits until the store's destructor has run.
drop(Pid, N) ->
    Ref = monitor(process, Pid),
    Pid ! drop,
    receive {'DOWN', Ref, process, Pid, _} -> ok end,
    nif_session_cache_demo:wait_until(fun() -> not lists:member(N, [E || #{entries := E} <- nif_session_cache:stores()]) end, 60000).

collect_long_schedules() ->
    receive
        {monitor, Pid, long_schedule, Info} -> [{Pid, Info} | collect_long_schedules()]
    after 0 -> []
    end.

%%% Output

print(R) ->
    #{machine := M, session_etf_bytes := Etf} = R,
    io:format("~nnif_session_cache benchmark: ~s~nsession: ~B bytes in external term format~n", [M, Etf]),
    lists:foreach(fun print_operations/1, maps:get(operations, R)),
    ok = print_concurrency(maps:get(concurrency, R)),
    ok = print_memory(maps:get(memory, R)),
    ok = print_scale(maps:get(scale, R)),
    ok = print_cluster(maps:get(cluster, R)),
    print_scheduler(maps:get(scheduler, R)).

print_operations(#{keys := Shape, size := Size, ops_per_round := N, writes_per_round := W, rows := Rows,
                   faults := Faults}) ->
    io:format("~n~B entries, ~s, ~B reads and ~B writes per round (ns per operation, median of rounds;~n"
              "pf: minor page faults per operation, the VM's as a whole):~n", [Size, shape(Shape), N, W]),
    Fmt = "~-16s ~12s ~12s ~12s ~10s ~10s ~8s ~8s ~8s~n",
    io:format(Fmt, ["operation", "ours", "ETS", "gb_trees", "ours/ETS", "ours/gb", "pf ours", "pf ETS", "pf gb"]),
    [begin
         [Ours, Ets, Gb] = [proplists:get_value(Mod, Row) || Mod <- ?STORES],
         [PfOurs, PfEts, PfGb] = [fault_num(proplists:get_value(Mod, proplists:get_value(Op, Faults))) || Mod <- ?STORES],
         io:format(Fmt, [atom_to_list(Op), num(Ours), num(Ets), num(Gb), ratio(Ours, Ets), ratio(Ours, Gb),
                         PfOurs, PfEts, PfGb])
     end || {Op, Row} <- Rows],
    ok.

print_concurrency(skipped) -> ok;
print_concurrency(#{size := Size, rows := Rows}) ->
    io:format("~nConcurrent lookups at ~B entries while the owner writes (ns per lookup per reader):~n", [Size]),
    Fmt = "~-10s ~12s ~12s ~10s~n",
    io:format(Fmt, ["readers", "ours", "ETS", "ours/ETS"]),
    [io:format(Fmt, [integer_to_list(R), num(O), num(E), ratio(O, E)])
     || {R, [{_, O}, {_, E}]} <- Rows],
    ok.

print_memory(skipped) -> ok;
print_memory(#{size := Size, etf_bytes := Etf, stores := Stores, plain := Plain}) ->
    io:format("~nMemory per session at ~B entries (bytes; measured: growth of erlang:memory(system) plus the owner process's memory; reported: the store's own figure):~n", [Size]),
    io:format("the benchmark's busy session (client keys), term_to_binary size: ~s~n", [num(Etf)]),
    print_memory_rows(Stores),
    #{etf_bytes := PlainEtf, stores := PlainStores} = Plain,
    io:format("a plain server session, OTP's own without a client certificate (server keys), term_to_binary size: ~s~n",
              [num(PlainEtf)]),
    print_memory_rows(PlainStores),
    io:format("~-28s ~19s ~10s  (about 4,000 sessions per MB, as nginx documents ssl_session_cache)~n",
              ["nginx", "", "262"]),
    ok.

print_memory_rows(Stores) ->
    [io:format("~-28s measured ~10s   reported ~10s~n", [atom_to_list(Mod), num(Measured), num(Reported)])
     || {Mod, {Measured, Reported}} <- Stores],
    ok.

print_scale(skipped) -> ok;
print_scale(Rows) ->
    io:format("~nScale: plain server sessions in our store alone (bytes per session; ns per lookup, median of rounds):~n"),
    Fmt = "~-12s ~12s ~12s ~12s ~12s ~16s~n",
    io:format(Fmt, ["sessions", "measured", "reported", "lookup_hit", "lookup_miss", "hit/hit at first"]),
    [{_, #{lookup_hit_ns := First}} | _] = Rows,
    [io:format(Fmt, [num(Size), num(M), num(R), num(H), num(Miss), ratio(H, First)])
     || {Size, #{measured_bytes := M, reported_bytes := R, lookup_hit_ns := H, lookup_miss_ns := Miss}} <- Rows],
    ok.

print_cluster(skipped) -> ok;
print_cluster(Rows) ->
    io:format("~nThe shared level through a local redis-server (two listeners of this VM as two nodes; README, \"Cluster\"):~n"),
    {_, Local, _} = lists:keyfind(resumed_on_the_node_per_s, 1, Rows),
    {_, Cross, Share} = lists:keyfind(resumed_across_nodes_per_s, 1, Rows),
    {_, Full, _} = lists:keyfind(full_per_s, 1, Rows),
    io:format("handshakes/s, one client, median of 4 alternated rounds: resumed on the node ~s, across nodes ~s (~s resumed), full ~s~n",
              [num(Local), num(Cross), num(Share), num(Full)]),
    io:format("  across / on the node: ~s (goal >= 0.95x); across / full: ~s (goal >= 3x)~n",
              [ratio(Cross, Local), ratio(Cross, Full)]),
    {_, P50, P99} = lists:keyfind(remote_lookup_us, 1, Rows),
    io:format("lookup that goes to Redis (us): p50 ~B, p99 ~B (goal: p99 < 1000)~n", [P50, P99]),
    {_, WithShared, Without} = lists:keyfind(update_ns, 1, Rows),
    io:format("update with shared ~s ns, without ~s ns: ~s (goal <= 1.2x)~n",
              [num(WithShared), num(Without), ratio(WithShared, Without)]),
    case lists:keyfind(tls_lookup_us, 1, Rows) of
        {_, PP50, PP99, TP50, TP99} ->
            io:format("lookup that goes to Redis (us), alternated rounds: plain p50 ~B, p99 ~B; TLS p50 ~B, p99 ~B "
                      "(TLS / plain: p50 ~s, p99 ~s)~n", [PP50, PP99, TP50, TP99, ratio(TP50, PP50), ratio(TP99, PP99)]);
        false ->
            ok
    end,
    {_, FloodNs, PlainNs, Asked, N} = lists:keyfind(flood_lookup_ns, 1, Rows),
    io:format("~B lookups of random ids: ~s ns each with shared (max_reads_per_s 1000: ~B reached Redis), ~s ns without~n",
              [N, num(FloodNs), Asked, num(PlainNs)]),
    {_, Calm, FloodedPlain, FloodedShared} = lists:keyfind(flood_resumed_per_s, 1, Rows),
    io:format("resumptions/s on a listener whose cache two processes flood with random ids: ~s with shared, ~s without "
              "(~s); ~s with no flood~n", [num(FloodedShared), num(FloodedPlain), ratio(FloodedShared, FloodedPlain),
                                          num(Calm)]),
    print_storm(lists:keyfind(storm, 1, Rows)).

print_storm(false) ->
    ok;
print_storm({storm, Clients, Plain, Shared}) ->
    io:format("reconnect storm: ~B clients of a closed listener back on two others (8 at a time):~n", [Clients]),
    [io:format("  ~-16s resumed ~5.1f %, all back in ~s ms, ~s ms CPU per reconnect (this VM and redis-server)~n",
               [Label, 100 * R, num(W), num(Cpu * 1000)])
     || {Label, #{resumed := R, wall_ms := W, cpu_s_per_reconnect := Cpu}} <- [{"without sharing", Plain},
                                                                               {"with sharing", Shared}]],
    io:format("  with / without: wall ~s, CPU per reconnect ~s~n",
              [ratio(maps:get(wall_ms, Shared), maps:get(wall_ms, Plain)),
               ratio(maps:get(cpu_s_per_reconnect, Shared), maps:get(cpu_s_per_reconnect, Plain))]).

print_scheduler(skipped) -> ok;
print_scheduler(#{entries := N, steps := Steps, huge := Huge, huge_events := HugeEvents}) ->
    io:format("~nScheduler safety at ~B entries, erlang:system_monitor long_schedule >= 1 ms:~n", [N]),
    [io:format("~-22s ~8B ms wall   ~B long_schedule events ~p~n", [atom_to_list(Name), Ms, length(Events), Events])
     || {Name, Ms, Events} <- Steps],
    Ops = [Op || {Op, _} <- element(2, hd(Huge))],
    io:format("~nScheduler safety, the suite's huge sessions: the longest NIF call on a normal scheduler / on a dirty "
              "one (us),~nand the store's accounting (units of the normal-scheduler budget):~n~-16s", ["session"]),
    [io:format("~16s", [atom_to_list(Op)]) || Op <- Ops],
    io:format("  largest/budget  dirty calls~n"),
    [begin
         io:format("~-16s", [atom_to_list(Kind)]),
         [io:format("~16s", [io_lib:format("~B / ~B", [Normal, Dirty])]) || {_, {Normal, Dirty}} <- Times],
         io:format("  ~6B/~B ~8B~n", [L, B, D])
     end || {Kind, Times, #{budget := B, largest_call := L, dirty_calls := D}} <- Huge],
    io:format("long_schedule events >= 1 ms during these calls: ~B ~p~n", [length(HugeEvents), HugeEvents]),
    ok.

write(none, _) -> ok;
write(Dir, R) ->
    ok = filelib:ensure_path(Dir),
    ok = file:write_file(filename:join(Dir, "results.term"), io_lib:format("~p.~n", [R])),
    ok = file:write_file(filename:join(Dir, "chart.svg"), chart(maps:get(operations, R))).

%%% Chart: ns per operation against store size, one panel per operation, a line per store and key shape
%%% (solid: client keys, dashed: server keys).

chart(Operations) ->
    Ops = [lookup_hit, lookup_miss, update_new, delete, select_session, size],
    Colours = [{nif_session_cache, "#d62728"}, {ssl_client_session_cache_db, "#1f77b4"}, {ssl_server_session_cache_db, "#2ca02c"}],
    {W, H, Cols} = {300, 220, 3},
    Panels = [panel(Op, Operations, Colours, ((I - 1) rem Cols) * W, ((I - 1) div Cols) * H, W, H)
              || {I, Op} <- lists:zip(lists:seq(1, length(Ops)), Ops)],
    Legend = [io_lib:format("<rect x='~B' y='~B' width='12' height='12' fill='~s'/><text x='~B' y='~B'>~s</text>",
                            [20 + (I - 1) * 230, 2 * H + 18, C, 36 + (I - 1) * 230, 2 * H + 29, label(M)])
              || {I, {M, C}} <- lists:zip(lists:seq(1, 3), Colours)],
    Dashes = io_lib:format("<text x='20' y='~B'>solid: client keys {{Host, Port}, Id}; dashed: server keys "
                           "(a bare Id)</text>", [2 * H + 49]),
    ["<svg xmlns='http://www.w3.org/2000/svg' width='", integer_to_list(Cols * W), "' height='", integer_to_list(2 * H + 60),
     "' font-family='sans-serif' font-size='11'><rect width='100%' height='100%' fill='white'/>", Panels, Legend, Dashes,
     "</svg>\n"].

panel(Op, Operations, Colours, X0, Y0, W, H) ->
    Sizes = lists:usort([S || #{size := S} <- Operations]),
    Points = [{M, Shape, [{S, V} || #{keys := Shape1, size := S, rows := Rows} <- Operations, Shape1 =:= Shape,
                                    V <- [proplists:get_value(M, proplists:get_value(Op, Rows, []))], is_number(V)]}
              || {M, _} <- Colours, Shape <- [client, server]],
    Max = lists:max([1 | [V || {_, _, Ps} <- Points, {_, V} <- Ps]]),
    {L, T, PW, PH} = {X0 + 45, Y0 + 25, W - 60, H - 60},
    XS = fun(S) -> L + case length(Sizes) of 1 -> PW div 2; _ -> round(PW * math:log10(S / hd(Sizes)) / max(1.0e-9, math:log10(lists:last(Sizes) / hd(Sizes)))) end end,
    YS = fun(V) -> T + PH - round(PH * V / Max) end,
    Lines = [io_lib:format("<polyline fill='none' stroke='~s' stroke-width='2'~s points='~s'/>",
                           [proplists:get_value(M, Colours), dashes(Shape),
                            [io_lib:format("~B,~B ", [XS(S), YS(V)]) || {S, V} <- Ps]])
             || {M, Shape, Ps} <- Points, Ps =/= []],
    Ticks = [io_lib:format("<text x='~B' y='~B' text-anchor='middle'>~s</text>", [XS(S), T + PH + 14, short(S)]) || S <- Sizes],
    [io_lib:format("<text x='~B' y='~B' font-weight='bold'>~s (ns/op)</text>", [L, Y0 + 15, Op]),
     io_lib:format("<line x1='~B' y1='~B' x2='~B' y2='~B' stroke='black'/><line x1='~B' y1='~B' x2='~B' y2='~B' stroke='black'/>",
                   [L, T, L, T + PH, L, T + PH, L + PW, T + PH]),
     io_lib:format("<text x='~B' y='~B' text-anchor='end'>~s</text><text x='~B' y='~B' text-anchor='end'>0</text>",
                   [L - 4, T + 8, num(Max), L - 4, T + PH]),
     Ticks, Lines].

dashes(client) -> "";
dashes(server) -> " stroke-dasharray='5,3'".

shape(client) -> "client keys {{Host, Port}, Id}";
shape(server) -> "server keys (a bare Id)".

label(nif_session_cache) -> "nif_session_cache";
label(ssl_client_session_cache_db) -> "ETS (ssl_client_session_cache_db)";
label(ssl_server_session_cache_db) -> "gb_trees (ssl_server_session_cache_db)".

-spec short(non_neg_integer()) -> string().
short(S) when S >= 1000000 -> integer_to_list(S div 1000000) ++ "M";
short(S) when S >= 1000 -> integer_to_list(S div 1000) ++ "k";
short(S) -> integer_to_list(S).

%%% Helpers

machine() ->
    lists:flatten(io_lib:format("OTP ~s (erts ~s), ~B schedulers, ~s, transparent huge pages ~s",
                                [erlang:system_info(otp_release), erlang:system_info(version),
                                 erlang:system_info(schedulers_online), cpu(), huge_pages()])).

%% Linux's transparent huge page mode, the bracketed word of its setting: the scale section's lookups at 10M
%% entries depend on it (README, "Scale").
huge_pages() ->
    case file:read_file("/sys/kernel/mm/transparent_hugepage/enabled") of
        {ok, Modes} ->
            case re:run(Modes, "\\[([a-z]+)\\]", [{capture, all_but_first, list}]) of
                {match, [Mode]} -> Mode;
                nomatch -> "unknown"
            end;
        _ -> "unknown"
    end.

cpu() ->
    case file:read_file("/proc/cpuinfo") of
        {ok, Info} ->
            case re:run(Info, "model name\\s*: ([^\\n]*)", [{capture, all_but_first, list}]) of
                {match, [Model]} -> Model;
                nomatch -> "unknown CPU"
            end;
        _ -> "unknown CPU"
    end.

%% Runs Fun in a fresh process (a clean heap) and returns its result.
-spec in_process(fun(() -> T)) -> T.
in_process(Fun) ->
    hd(in_parallel(1, Fun)).

%% Fun() in a process spawned with Options.
in_process(Fun, Options) ->
    Parent = self(),
    {Pid, Ref} = spawn_opt(fun() -> Parent ! {self(), result, Fun()} end, [monitor | Options]),
    receive
        {Pid, result, Result} ->
            true = demonitor(Ref, [flush]),
            Result;
        {'DOWN', Ref, process, Pid, Reason} ->
            error({benchmark_process_failed, Reason})
    end.

%% Runs Fun in N fresh processes at once and returns their results.
-spec in_parallel(pos_integer(), fun(() -> T)) -> [T].
in_parallel(N, Fun) ->
    Parent = self(),
    Runs = [spawn_monitor(fun() -> Parent ! {self(), result, Fun()} end) || _ <- lists:seq(1, N)],
    [receive
         {Pid, result, Result} ->
             true = demonitor(Ref, [flush]),
             Result;
         {'DOWN', Ref, process, Pid, Reason} ->
             error({benchmark_process_failed, Reason})
     end || {Pid, Ref} <- Runs].

-spec median([number()]) -> number().
median(Values) ->
    percentile(lists:sort(Values), 50).

-spec percentile([number()], number()) -> number().
percentile(Sorted, P) ->
    lists:nth(max(1, min(length(Sorted), round(length(Sorted) * P / 100))), Sorted).

-spec num(number() | n_a) -> string().
num(n_a) -> "n/a";
num(V) when is_integer(V) -> integer_to_list(V);
num(V) when is_float(V), V >= 100 -> integer_to_list(round(V));
num(V) when is_float(V) -> float_to_list(V, [{decimals, 2}]).

fault_num(V) when is_float(V) -> float_to_list(V, [{decimals, 2}]);
fault_num(V) -> num(V).

-spec ratio(number() | n_a, number() | n_a) -> string().
ratio(A, B) when is_number(A), is_number(B), B > 0 -> float_to_list(A / B, [{decimals, 2}]) ++ "x";
ratio(_, _) -> "-".
