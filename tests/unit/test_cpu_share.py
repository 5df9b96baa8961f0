"""IdleCpus: CPU time used by other processes counts against the prompt threads; this
process's own work does not."""

from __future__ import annotations

import time

from interpreter.llm.cpu_share import MIN_WINDOW_S, IdleCpus, Reading, threads_for


def spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_threads_round_free_cpus_up_within_bounds():
    assert threads_for(2.0, cpus=2) == 2
    assert threads_for(1.3, cpus=2) == 2      # a core 70% free still gives most of itself
    assert threads_for(1.0, cpus=2) == 1
    assert threads_for(0.0, cpus=2) == 1      # never fewer than one
    assert threads_for(40.0, cpus=64) == 16   # capped


def test_no_answer_before_a_window_has_passed():
    watch = IdleCpus(2)
    assert watch.idle() is None


class ScriptedIdleCpus(IdleCpus):
    """IdleCpus over readings the test writes: the machine's busy CPU seconds and this
    process's own, at given times (the arithmetic, without the machine's other load)."""

    def __init__(self, cpus: int, readings: list[Reading]):
        self.readings = list(readings)
        super().__init__(cpus)

    def read(self) -> Reading:
        return self.readings.pop(0)


def test_another_process_busy_counts_and_our_own_work_does_not():
    watch = ScriptedIdleCpus(2, [
        Reading(at=0.0, busy=100.0, own=10.0),
        # 1 s: the machine was busy 1 CPU-second, all of it this process's own.
        Reading(at=1.0, busy=101.0, own=11.0),
        # 1 s more: busy 2 CPU-seconds, of which ours 1: another process took one CPU.
        Reading(at=2.0, busy=103.0, own=12.0),
        # 1 s more: both CPUs taken by others, none by us.
        Reading(at=3.0, busy=105.0, own=12.0),
    ])
    assert watch.idle() == 2.0        # our own spinning leaves both CPUs to a prompt
    assert watch.idle() == 1.0        # the other process took one
    assert watch.idle() == 0.0
    assert threads_for(0.0, cpus=2) == 1


def test_a_reading_within_the_window_keeps_the_last_answer():
    watch = ScriptedIdleCpus(2, [
        Reading(at=0.0, busy=0.0, own=0.0),
        Reading(at=1.0, busy=1.0, own=0.0),
        Reading(at=1.0 + MIN_WINDOW_S / 2, busy=1.5, own=0.0),
    ])
    assert watch.idle() == 1.0
    assert watch.idle() == 1.0        # too soon to measure again: the last answer stands


def test_the_machine_is_read_for_real():
    """The readings come from the machine: its busy time and this process's own grow."""
    watch = IdleCpus(2)
    first = watch.read()
    spin(0.2)
    second = watch.read()
    assert second.at > first.at and second.own > first.own and second.busy >= first.busy
