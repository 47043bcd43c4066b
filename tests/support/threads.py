"""Many threads at once in a test: start them all, then join each within a bound, so that a
thread that hangs fails the test (through what the caller asserts) instead of hanging it."""


def start_and_join(threads, timeout):
    """Start every thread, then join each for at most `timeout` seconds; returns the threads
    still alive after that (empty when all finished)."""
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    return [thread for thread in threads if thread.is_alive()]
