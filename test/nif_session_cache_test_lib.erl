%%% Helpers shared by the Common Test suites.
-module(nif_session_cache_test_lib).

-export([catch_error/1, in_other_process/1]).

%% {value, V} or {error, Reason}: the outcome of Fun, with error-class exceptions caught.
catch_error(Fun) ->
    try Fun() of
        Value -> {value, Value}
    catch
        error:Reason -> {error, Reason}
    end.

%% Fun's result, computed in a new process; fails the test case if that process crashes.
in_other_process(Fun) ->
    Parent = self(),
    {Pid, Ref} = spawn_monitor(fun() -> Parent ! {self(), result, Fun()} end),
    receive
        {Pid, result, Result} ->
            true = demonitor(Ref, [flush]),
            Result;
        {'DOWN', Ref, process, Pid, Reason} ->
            ct:fail({other_process_crashed, Reason})
    end.
