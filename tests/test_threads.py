"""The process-wide, reference-counted one-thread block."""

import threading

import torch

from landscape_core.threads import single_thread


def test_nested_and_overlapping_users_restore_the_count_once_the_last_leaves():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        entered, release = threading.Event(), threading.Event()

        def other_job():
            with single_thread():
                entered.set()
                release.wait(10)

        worker = threading.Thread(target=other_job)
        with single_thread():
            worker.start()
            assert entered.wait(10)
            with single_thread():
                assert torch.get_num_threads() == 1
        # the other job is still inside: the count stays 1 although this block has left
        assert torch.get_num_threads() == 1
        release.set()
        worker.join(10)
        assert torch.get_num_threads() == 2
        with single_thread(enabled=False):
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
