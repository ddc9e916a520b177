"""The reference-counted one-thread block, nested and from overlapping threads."""

import threading

import torch

from landscape_core.threads import single_thread


def _count_in_new_thread() -> int:
    seen = []
    worker = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    worker.start()
    worker.join(10)
    return seen[0]


def test_nested_blocks_restore_the_previous_count():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with single_thread():
            with single_thread():
                assert torch.get_num_threads() == 1
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with single_thread(enabled=False):
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_overlapping_threads_each_get_their_count_back_and_the_last_restores_the_default():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        entered, release, inside = threading.Event(), threading.Event(), []

        def other_job():
            with single_thread():
                entered.set()
                release.wait(10)
                inside.append(torch.get_num_threads())

        worker = threading.Thread(target=other_job)
        with single_thread():
            worker.start()
            assert entered.wait(10)
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2  # this thread is back although the other job is inside
        release.set()
        worker.join(10)
        assert inside == [1]  # the other job kept its one thread after this one left
        assert torch.get_num_threads() == 2
        assert _count_in_new_thread() == 2  # the default for new threads is restored by the last user
    finally:
        torch.set_num_threads(before)
