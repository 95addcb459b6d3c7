%%% The headline benchmark: TLS 1.2 handshake latency against the size of the listener's session cache.
%%%
%%% OTP's listener keeps its sessions in the heap of one cache process, and every connection calls that process:
%%% a resumption asks it for the session, a full handshake asks it for a fresh id and then registers the new
%%% session. A big cache makes that process's garbage collections long, and every handshake waiting on it waits
%%% them out. Here one listener's cache is filled with 0, 100k and 1M sessions, in three setups:
%%%   default            OTP's own store (ssl_server_session_cache_db, a gb_tree in the cache process's heap)
%%%   nif_session_cache  this library
%%%   off                the listener started with {reuse_sessions, false}: every handshake is full
%%% and concurrent clients run handshakes against it, four resumed to one full, each full handshake's session
%%% becoming the one its client resumes next. Clients resume with {reuse_session, {Id, Data}} and
%%% {reuse_sessions, false}, so no client store takes part: only the listener's cache differs between setups.
%%% Every listener is opened and filled first; the handshakes then run in rounds, the listeners taking turns in
%%% a shuffled order, and each listener's rounds are reported together.
%%%
%%% Reported per setup and size: handshakes per second, p50/p99/p99.9 of resumed and of full handshakes, the
%%% cache process's garbage collections while the handshakes ran (the longest, and how many), its full
%%% collection, and the same for resumption lookups made straight to the cache process. The floor is OTP's own
%%% order tree (session ids by time, in the cache process whatever the store), built alone in a process of its
%%% own: no store can make the cache process's full collection cheaper than that tree's.
%%%
%%% `make bench-handshakes` runs it; it prints the tables, writes handshakes.term and handshakes.svg to
%%% bench/results/, and never fails on a figure. Read ratios within one run: the machine is shared.
-module(nif_session_cache_bench_handshakes).

-export([run/0, run/1]).

-import(nif_session_cache_bench, [in_process/1, in_parallel/2, median/1, percentile/2, num/1, ratio/2, short/1,
                                  shuffle/1]).

-type setup() :: default | nif_session_cache | off.
-type options() :: #{sizes => [non_neg_integer()],
                     setups => [setup()],
                     clients => pos_integer(),
                     handshakes => pos_integer(),
                     rounds => pos_integer(),
                     lookups => non_neg_integer(),
                     out => file:filename() | none,
                     print => boolean()}.
-export_type([options/0, setup/0]).

%% One in FULL_EVERY handshakes is full, the rest resume.
-define(FULL_EVERY, 5).
%% Filling sends register_session casts in batches, and waits for the cache process to drain each one: a
%% million casts at once would sit in its mailbox, a second copy of every session.
-define(FILL_BATCH, 5000).

-spec run() -> map().
run() ->
    run(#{}).

-spec run(options()) -> map().
run(Options) ->
    O = maps:merge(#{sizes => [0, 100000, 1000000], setups => [default, nif_session_cache, off], clients => 4,
                     handshakes => 10000, rounds => 5, lookups => 20000, churn => 100000, out => none,
                     print => true}, Options),
    #{sizes := Sizes, setups := Setups, rounds := Rounds, handshakes := Handshakes} = O,
    %% A plain server session of this release, from a real handshake: what a listener without client
    %% certificates stores. Each filled session is a copy with its own id and master secret.
    Template = nif_session_cache_sessions:server_template(),
    nif_session_cache_demo:restart_ssl(default),
    %% One CA and certificate for every listener, made once (each call makes new ones).
    {ServerOpts, ClientOpts} = nif_session_cache_demo:tls_options(),
    %% Every listener is opened and filled first, each reading its store and its maximum from ssl's environment
    %% as it opens. Then the handshakes run in rounds, the listeners taking turns in a shuffled order, so that a
    %% noisy moment of this shared machine falls on all of them alike.
    Open = [open(Setup, Size, Template, ServerOpts, O) || Size <- Sizes, Setup <- Setups, Setup =/= off orelse Size =:= 0],
    try
        Runs = [{Cell, handshakes(Cell, [{reuse_sessions, false} | ClientOpts], O, max(1, Handshakes div Rounds))}
                || _ <- lists:seq(1, Rounds), Cell <- shuffle(Open)],
        Cells = [finish(Cell, [Run || {C, Run} <- Runs, C =:= Cell], O#{template => Template}) || Cell <- Open],
        Results = #{otp_release => erlang:system_info(otp_release), clients => maps:get(clients, O),
                    handshakes => Handshakes, rounds => Rounds, cells => Cells,
                    floor => [order_tree(Size) || Size <- Sizes, Size > 0]},
        maps:get(print, O) andalso print(Results),
        _ = write(maps:get(out, O), Results),
        Results
    after
        _ = [ssl:close(Listener) || #{listener := Listener} <- Open],
        nif_session_cache_demo:restart_ssl(default),
        application:unset_env(ssl, session_cache_server_max)
    end.

%%% One listener

%% A listener of Setup whose cache holds Size sessions, with its acceptors.
open(Setup, Size, Template, ServerOpts, #{clients := Clients, handshakes := Handshakes, churn := Churn}) ->
    ok = use(Setup),
    ok = application:set_env(ssl, session_cache_server_max, Size + Churn + 2 * Handshakes + 1000),
    Before = listener_caches(),
    {ok, Listener} = ssl:listen(0, [{ip, {127, 0, 0, 1}} | [{reuse_sessions, false} || Setup =:= off] ++ ServerOpts]),
    {ok, {_, Port}} = ssl:sockname(Listener),
    %% As a server would, accept with several processes: one acceptor would make the clients queue behind each
    %% other's handshakes.
    [spawn_link(fun() -> acceptor(Listener) end) || _ <- lists:seq(1, 2 * Clients)],
    [Cache] = listener_caches() -- Before,
    {{FillUs, Ids}, FillGcs} = traced(Cache, fun() -> timer:tc(fun() -> fill(Cache, Template, Size) end) end),
    settle(Cache),
    #{setup => Setup, size => Size, listener => Listener, port => Port, cache => Cache, ids => Ids,
      fill_s => FillUs / 1.0e6, fill_gc => FillGcs}.

%% ssl's session callback keys for the next listener (each reads them as it opens), on every release.
use(Setup) ->
    Keys = [session_cb, client_session_cb, server_session_cb],
    _ = case Setup of
            nif_session_cache -> [ok = application:set_env(ssl, Key, nif_session_cache) || Key <- Keys];
            _ -> [ok = application:unset_env(ssl, Key) || Key <- Keys]
        end,
    ok.

%% The rounds' handshakes together, then lookups straight to the cache process, its full collection, and its
%% collections while Churn more sessions are registered: the pauses of a listener that keeps making sessions.
finish(#{setup := Setup, size := Size, cache := Cache, ids := Ids, fill_s := FillS, fill_gc := FillGc}, Runs,
       #{clients := Clients, lookups := Lookups, churn := Churn, template := Template}) ->
    Samples = lists:append([S || #{samples := S} <- Runs]),
    Us = lists:sum([T || #{us := T} <- Runs]),
    Handshakes = #{per_s => length(Samples) * 1.0e6 / Us,
                   resumed => stats(lists:sort([T || {resumed, T} <- Samples])),
                   full => stats(lists:sort([T || {full, T} <- Samples])),
                   %% A resumption the listener refused ends as a full handshake.
                   refused => length([x || {refused, _} <- Samples]),
                   failed => length([x || {failed, _} <- Samples]),
                   gc => merge_gcs([G || #{gc := G} <- Runs])},
    {LookupRun, LookupGcs} = traced(Cache, fun() -> lookups(Cache, Ids, Clients, Lookups) end),
    erlang:garbage_collect(Cache),
    [{heap_size, Heap}, {total_heap_size, TotalHeap}] = process_info(Cache, [heap_size, total_heap_size]),
    FullGcUs = median([element(1, timer:tc(fun() -> erlang:garbage_collect(Cache) end)) || _ <- lists:seq(1, 5)]),
    settle(Cache),
    %% A hundred at a time, as a busy listener's handshakes bring them: a deep mailbox would be collected too.
    {_, ChurnGcs} = traced(Cache, fun() -> fill(Cache, Template, churn(Setup, Size, Churn), 100, <<>>) end),
    #{setup => Setup, size => Size, fill_s => FillS, fill_gc => FillGc,
      heap_words => Heap, total_heap_words => TotalHeap, full_gc_us => FullGcUs,
      handshakes => Handshakes, lookups => LookupRun#{gc => LookupGcs},
      churn => #{registrations => churn(Setup, Size, Churn), gc => ChurnGcs}}.

%% Registrations after the handshakes: none where the cache is empty or off.
churn(off, _Size, _Churn) -> 0;
churn(_Setup, 0, _Churn) -> 0;
churn(_Setup, _Size, Churn) -> Churn.

listener_caches() ->
    [Pid || {_, Pid, _, _} <- supervisor:which_children(ssl_server_session_cache_sup), is_pid(Pid)].

%% Size sessions registered the way a listener registers them, through the cache process. Returns their ids, one
%% binary of 32-byte ids: a million ids as a list would sit in this process's heap through every measurement.
fill(Cache, Template, Size) ->
    fill(Cache, Template, Size, ?FILL_BATCH, <<>>).

fill(_Cache, _Template, 0, _BatchSize, Ids) ->
    Ids;
fill(Cache, Template, Size, BatchSize, Ids0) ->
    Batch = nif_session_cache_sessions:sessions(Template, min(Size, BatchSize)),
    Ids = lists:foldl(fun({Id, S}, Acc) ->
                              ok = ssl_server_session_cache:register_session(Cache, S),
                              <<Acc/binary, Id/binary>>
                      end, Ids0, Batch),
    ok = drained(Cache),
    fill(Cache, Template, Size - length(Batch), BatchSize, Ids).

drained(Cache) ->
    case process_info(Cache, message_queue_len) of
        {message_queue_len, 0} ->
            %% The last cast may still be in hand: a call returns after it.
            _ = ssl_server_session_cache:new_session_id(Cache),
            ok;
        {message_queue_len, _} ->
            timer:sleep(5),
            drained(Cache)
    end.

%% A cache that filled over hours holds its sessions in its old heap. One filled a moment ago holds them in its
%% young heap, and its next minor collection, whenever it comes, copies them all to the old heap: a cost of the
%% fill, not of the handshakes. A full collection and then a minor one settle them where they would be.
settle(Cache) ->
    true = erlang:garbage_collect(Cache),
    true = erlang:garbage_collect(Cache, [{type, minor}]),
    ok.

%%% Handshakes

%% Handshakes each connection and closes it, until the listener closes.
acceptor(Listener) ->
    case ssl:transport_accept(Listener) of
        {ok, Transport} ->
            _ = case ssl:handshake(Transport, 30000) of
                    {ok, Socket} -> ssl:close(Socket);
                    {error, _} -> ok
                end,
            acceptor(Listener);
        {error, _} ->
            ok
    end.

%% One round on Cell's listener: Clients clients, each making PerRound div Clients handshakes, one full to start,
%% then four resumed to one full, each full handshake's session the one its client resumes next. Returns the
%% samples, the round's wall time and the cache process's collections meanwhile.
handshakes(#{port := Port, cache := Cache}, ClientOpts, #{clients := Clients}, PerRound) ->
    PerClient = max(?FULL_EVERY, PerRound div Clients),
    {{Us, Runs}, Gcs} = traced(Cache, fun() ->
        timer:tc(fun() ->
            in_parallel(Clients, fun() ->
                {ok, Session, First} = handshake(Port, ClientOpts, none),
                client_loop(Port, ClientOpts, Session, 1, PerClient, [{full, First}])
            end)
        end)
    end),
    #{samples => lists:append(Runs), us => Us, gc => Gcs}.

client_loop(_Port, _ClientOpts, _Session, N, PerClient, Acc) when N >= PerClient ->
    Acc;
client_loop(Port, ClientOpts, Session, N, PerClient, Acc) ->
    Resume = case N rem ?FULL_EVERY of 0 -> none; _ -> Session end,
    case handshake(Port, ClientOpts, Resume) of
        {ok, Next, Us} when Resume =:= none ->
            client_loop(Port, ClientOpts, Next, N + 1, PerClient, [{full, Us} | Acc]);
        {ok, Session, Us} ->
            client_loop(Port, ClientOpts, Session, N + 1, PerClient, [{resumed, Us} | Acc]);
        {ok, Next, Us} ->
            client_loop(Port, ClientOpts, Next, N + 1, PerClient, [{refused, Us} | Acc]);
        {error, Us} ->
            client_loop(Port, ClientOpts, Session, N + 1, PerClient, [{failed, Us} | Acc])
    end.

%% One connection, resuming {Id, Data} or not: {ok, {Id, Data} of the connection's session, microseconds}.
handshake(Port, ClientOpts, Resume) ->
    Extra = case Resume of none -> []; {_, _} -> [{reuse_session, Resume}] end,
    Start = erlang:monotonic_time(),
    case ssl:connect({127, 0, 0, 1}, Port, Extra ++ ClientOpts, 30000) of
        {ok, Socket} ->
            Us = since(Start),
            {ok, [{session_id, Id}, {session_data, Data}]} =
                ssl:connection_information(Socket, [session_id, session_data]),
            ok = ssl:close(Socket),
            {ok, {Id, Data}, Us};
        {error, _} ->
            {error, since(Start)}
    end.

since(Start) ->
    erlang:convert_time_unit(erlang:monotonic_time() - Start, native, microsecond).

%%% Lookups straight to the cache process: the call a resumption makes, without the handshake around it

lookups(_Cache, <<>>, _Clients, _Lookups) ->
    #{};
lookups(_Cache, _Ids, _Clients, 0) ->
    #{};
lookups(Cache, Ids, Clients, Lookups) ->
    Count = byte_size(Ids) div 32,
    Runs = in_parallel(Clients, fun() ->
        [begin
             Id = binary:part(Ids, 32 * (rand:uniform(Count) - 1), 32),
             Start = erlang:monotonic_time(),
             Session = ssl_server_session_cache:reuse_session(Cache, Id),
             {is_tuple(Session), since(Start)}
         end || _ <- lists:seq(1, Lookups div Clients)]
    end),
    All = lists:append(Runs),
    (stats(lists:sort([Us || {_, Us} <- All])))#{found => length([x || {true, _} <- All]), total => length(All)}.

%%% The cache process's garbage collections

%% Runs Fun while a tracer records each garbage collection of Cache: {Result, GCs} where GCs gives the longest
%% minor and major collection in microseconds and how many of each there were.
traced(Cache, Fun) ->
    Tracer = spawn(fun() -> gc_tracer(#{}, []) end),
    1 = erlang:trace(Cache, true, [garbage_collection, monotonic_timestamp, {tracer, Tracer}]),
    Result = try Fun() after untrace(Cache) end,
    {Result, gc_summary(Cache, Tracer)}.

untrace(Cache) ->
    try erlang:trace(Cache, false, [garbage_collection]) catch error:badarg -> 0 end.

gc_summary(Cache, Tracer) ->
    %% Trace messages already sent reach the tracer before this one.
    Ref = erlang:trace_delivered(Cache),
    receive {trace_delivered, Cache, Ref} -> ok end,
    Tracer ! {done, self()},
    receive {gcs, Tracer, Durations} -> summary(Durations) end.

gc_tracer(Started, Durations) ->
    receive
        {trace_ts, _, Start, _Info, At} when Start =:= gc_minor_start; Start =:= gc_major_start ->
            gc_tracer(Started#{kind(Start) => At}, Durations);
        {trace_ts, _, End, _Info, At} when End =:= gc_minor_end; End =:= gc_major_end ->
            Kind = kind(End),
            case maps:take(Kind, Started) of
                {From, Rest} -> gc_tracer(Rest, [{Kind, erlang:convert_time_unit(At - From, native, microsecond)} | Durations]);
                error -> gc_tracer(Started, Durations)
            end;
        {done, From} ->
            From ! {gcs, self(), Durations};
        _Other ->
            gc_tracer(Started, Durations)
    end.

kind(gc_minor_start) -> minor;
kind(gc_minor_end) -> minor;
kind(gc_major_start) -> major;
kind(gc_major_end) -> major.

%% Several runs' collections as one: the longest of each kind, and how many in all.
merge_gcs(Gcs) ->
    maps:from_list([{Kind, #{count => lists:sum([C || #{Kind := #{count := C}} <- Gcs]),
                             longest_us => lists:max([0 | [L || #{Kind := #{longest_us := L}} <- Gcs]])}}
                    || Kind <- [minor, major]]).

summary(Durations) ->
    maps:from_list([{Kind, #{count => length(Us), longest_us => lists:max([0 | Us])}}
                    || Kind <- [minor, major], Us <- [[U || {K, U} <- Durations, K =:= Kind]]]).

%%% The floor: OTP's order tree alone

%% The cache process's order tree at Size sessions (gb_trees of {TimeStamp, UniqueInteger} to session id, as
%% ssl_server_session_cache builds it), alone in a process: its full collection.
order_tree(Size) ->
    TimeStamp = erlang:monotonic_time(),
    in_process(fun() ->
        Order = lists:foldl(fun(_, Tree) ->
                                    gb_trees:insert({TimeStamp, erlang:unique_integer([monotonic])},
                                                    crypto:strong_rand_bytes(32), Tree)
                            end, gb_trees:empty(), lists:seq(1, Size)),
        erlang:garbage_collect(),
        Us = median([element(1, timer:tc(fun() -> erlang:garbage_collect() end)) || _ <- lists:seq(1, 5)]),
        {heap_size, Heap} = process_info(self(), heap_size),
        Words = erts_debug:flat_size(Order),
        #{size => Size, tree_words => Words, heap_words => Heap, full_gc_us => Us}
    end).

%%% Output

print(#{otp_release := Release, clients := Clients, cells := Cells, floor := Floor}) ->
    io:format("~nHandshakes against one listener whose cache holds N sessions (OTP ~s, ~b clients, TLS 1.2, "
              "4 resumed : 1 full)~n~n", [Release, Clients]),
    Row = "~-18s ~8s ~7s | ~8s ~8s ~9s | ~8s ~8s ~10s | ~12s ~12s ~10s~n",
    io:format(Row, ["setup", "sessions", "hs/s", "res p50", "res p99", "res p99.9", "full p50", "full p99",
                    "full p99.9", "longest gc", "gcs min/maj", "full gc"]),
    io:format(Row, ["", "", "", "us", "us", "us", "us", "us", "us", "us", "", "us"]),
    [io:format(Row, [atom_to_list(Setup), short(Size), num(PerS),
                     num(at(p50, Res)), num(at(p99, Res)), num(at(p999, Res)),
                     num(at(p50, Full)), num(at(p99, Full)), num(at(p999, Full)),
                     num(longest(Gc)), counts(Gc), num(FullGc)])
     || #{setup := Setup, size := Size, full_gc_us := FullGc,
          handshakes := #{per_s := PerS, resumed := Res, full := Full, gc := Gc}} <- Cells],
    Problems = [{Setup, Size, R, F} || #{setup := Setup, size := Size, handshakes := #{refused := R, failed := F}} <- Cells,
                                       R + F > 0, Setup =/= off],
    [io:format("  ~s at ~s: ~b resumptions refused, ~b handshakes failed~n", [Setup, short(Size), R, F])
     || {Setup, Size, R, F} <- Problems],
    io:format("~nLookups straight to the cache process (ssl_server_session_cache:reuse_session/2, ~b callers)~n~n",
              [Clients]),
    Row2 = "~-18s ~8s ~8s ~8s ~9s ~9s | ~12s ~12s~n",
    io:format(Row2, ["setup", "sessions", "p50 us", "p99 us", "p99.9 us", "max us", "longest gc", "gcs min/maj"]),
    [io:format(Row2, [atom_to_list(Setup), short(Size), num(P50), num(P99), num(P999), num(Max),
                      num(longest(Gc)), counts(Gc)])
     || #{setup := Setup, size := Size, lookups := #{p50 := P50, p99 := P99, p999 := P999, max := Max, gc := Gc}}
            <- Cells],
    [io:format("  ~s at ~s: ~b of ~b lookups found no session~n", [Setup, short(Size), Of - Found, Of])
     || #{setup := Setup, size := Size, lookups := #{found := Found, total := Of}} <- Cells, Found < Of],
    io:format("~nThe cache process while more sessions are registered (register_session/2 casts, after the "
              "handshakes)~n~n"),
    Row4 = "~-18s ~8s ~14s ~12s ~14s~n",
    io:format(Row4, ["setup", "sessions", "registrations", "gcs min/maj", "longest gc us"]),
    [io:format(Row4, [atom_to_list(Setup), short(Size), integer_to_list(N), counts(Gc), num(longest(Gc))])
     || #{setup := Setup, size := Size, churn := #{registrations := N, gc := Gc}} <- Cells, N > 0],
    io:format("~nThe cache process's full collection against the floor, OTP's order tree alone~n~n"),
    Row3 = "~-10s ~14s ~14s ~18s ~18s~n",
    io:format(Row3, ["sessions", "floor (us)", "tree (words)", "nif_session_cache", "default"]),
    [io:format(Row3, [short(Size), num(FloorUs), num(Words),
                      vs(full_gc(nif_session_cache, Size, Cells), FloorUs), vs(full_gc(default, Size, Cells), FloorUs)])
     || #{size := Size, full_gc_us := FloorUs, tree_words := Words} <- Floor],
    ok.

full_gc(Setup, Size, Cells) ->
    case [Us || #{setup := S, size := N, full_gc_us := Us} <- Cells, S =:= Setup, N =:= Size] of
        [Us] -> Us;
        [] -> n_a
    end.

vs(n_a, _) -> "-";
vs(Us, Floor) -> io_lib:format("~s (~s)", [num(Us), ratio(Us, Floor)]).

at(_, #{count := 0}) -> n_a;
at(Key, Stats) -> maps:get(Key, Stats).

longest(Gc) -> lists:max([L || #{longest_us := L} <- maps:values(Gc)]).

counts(#{minor := #{count := Minor}, major := #{count := Major}}) ->
    integer_to_list(Minor) ++ "/" ++ integer_to_list(Major).

stats([]) ->
    #{count => 0};
stats(Sorted) ->
    #{count => length(Sorted), p50 => percentile(Sorted, 50), p99 => percentile(Sorted, 99),
      p999 => percentile(Sorted, 99.9), max => lists:last(Sorted)}.

write(none, _) ->
    ok;
write(Dir, Results) ->
    ok = filelib:ensure_dir(filename:join(Dir, "x")),
    ok = file:write_file(filename:join(Dir, "handshakes.term"), io_lib:format("~p.~n", [Results])),
    ok = file:write_file(filename:join(Dir, "handshakes.svg"), chart(Results)).

%% Resumed handshakes' p50 and p99.9 against cache size, one line per setup; off, which holds no sessions, as
%% a level line.
chart(#{otp_release := Release, cells := Cells}) ->
    {W, H, Left, Top, PlotW, PlotH} = {720, 420, 70, 40, 600, 300},
    Sizes = lists:usort([S || #{size := S} <- Cells]),
    Series = [{Setup, Key, [{Size, at(Key, R)} || #{setup := S1, size := Size, handshakes := #{resumed := R}} <- Cells,
                                                  S1 =:= Setup]}
              || Setup <- [default, nif_session_cache], Key <- [p50, p999]],
    Off = [V || #{setup := off, handshakes := #{full := F}} <- Cells, V <- [at(p999, F)], is_number(V)],
    Values = [V || {_, _, Points} <- Series, {_, V} <- Points, is_number(V)] ++ Off,
    YMax = nice(lists:max([1 | Values])),
    X = fun(Size) -> Left + PlotW * index(Size, Sizes) / max(1, length(Sizes) - 1) end,
    Y = fun(V) -> Top + PlotH - PlotH * V / YMax end,
    Colour = fun(default) -> "#c0392b"; (nif_session_cache) -> "#2471a3" end,
    Dash = fun(p50) -> " stroke-dasharray='5,3'"; (p999) -> "" end,
    Lines = [io_lib:format("<polyline fill='none' stroke='~s' stroke-width='2'~s points='~s'/>~n",
                           [Colour(Setup), Dash(Key),
                            [io_lib:format("~.1f,~.1f ", [float(X(S)), float(Y(V))]) || {S, V} <- Points, is_number(V)]])
             || {Setup, Key, Points} <- Series],
    OffLine = [io_lib:format("<line x1='~b' x2='~b' y1='~.1f' y2='~.1f' stroke='#7f8c8d' stroke-dasharray='2,3'/>~n"
                             "<text x='~b' y='~.1f' font-size='11' fill='#7f8c8d'>reuse_sessions off: full p99.9</text>~n",
                             [Left, Left + PlotW, float(Y(V)), float(Y(V)), Left + 5, float(Y(V)) - 4])
               || V <- Off],
    XTicks = [io_lib:format("<text x='~.1f' y='~b' font-size='12' text-anchor='middle'>~s</text>~n",
                            [float(X(S)), Top + PlotH + 18, short(S)]) || S <- Sizes],
    YTicks = [io_lib:format("<text x='~b' y='~.1f' font-size='12' text-anchor='end'>~s</text>"
                            "<line x1='~b' x2='~b' y1='~.1f' y2='~.1f' stroke='#eee'/>~n",
                            [Left - 6, float(Y(V)) + 4, num(V), Left, Left + PlotW, float(Y(V)), float(Y(V))])
              || V <- [YMax * I / 4 || I <- lists:seq(0, 4)]],
    Legend = [io_lib:format("<text x='~b' y='~b' font-size='12' fill='~s'>~s ~s</text>~n",
                            [Left + 10 + 150 * I, Top - 12, Colour(Setup), Setup, Label])
              || {I, {Setup, Label}} <- lists:zip(lists:seq(0, 3),
                                                   [{default, "p99.9"}, {default, "p50 (dashed)"},
                                                    {nif_session_cache, "p99.9"}, {nif_session_cache, "p50 (dashed)"}])],
    ["<svg xmlns='http://www.w3.org/2000/svg' width='", integer_to_list(W), "' height='", integer_to_list(H),
     "' font-family='sans-serif'>\n<rect width='100%' height='100%' fill='white'/>\n",
     io_lib:format("<text x='~b' y='~b' font-size='13'>Resumed TLS 1.2 handshake latency (us) against sessions "
                   "in the listener's cache, OTP ~s</text>~n", [Left, 16, Release]),
     YTicks, XTicks, Lines, OffLine, Legend, "</svg>\n"].

index(Size, Sizes) -> length(lists:takewhile(fun(S) -> S =/= Size end, Sizes)).

nice(V) ->
    Step = math:pow(10, erlang:floor(math:log10(V))),
    Step * ceil(V / Step).
