/* sem_clockwait for processes under libfaketime (LD_PRELOAD before it): libfaketime 0.9.10 fakes
 * CLOCK_MONOTONIC (its FAKETIME_DONT_FAKE_MONOTONIC breaks Python's time.sleep) but does not
 * wrap sem_clockwait, which CPython 3.11 uses for every lock wait with a timeout
 * (threading.Event.wait, queue.get): the faked deadline reaches the kernel unchanged, so a 10 s
 * wait lasts as long as the fake clock's offset. This turns the wait into one relative to the
 * (faked) clock it names, and hands it to sem_timedwait, which libfaketime does translate. */
#define _GNU_SOURCE
#include <errno.h>
#include <semaphore.h>
#include <time.h>

int sem_clockwait(sem_t *sem, clockid_t clock, const struct timespec *abstime) {
  struct timespec now, rt;
  if (abstime->tv_nsec < 0 || abstime->tv_nsec >= 1000000000L) {
    errno = EINVAL;
    return -1;
  }
  clock_gettime(clock, &now);
  clock_gettime(CLOCK_REALTIME, &rt);
  long long left = (long long)(abstime->tv_sec - now.tv_sec) * 1000000000LL +
                   (abstime->tv_nsec - now.tv_nsec);
  if (left < 0) left = 0;
  long long ns = (long long)rt.tv_nsec + left % 1000000000LL;
  struct timespec deadline = {rt.tv_sec + left / 1000000000LL + ns / 1000000000LL,
                              ns % 1000000000LL};
  return sem_timedwait(sem, &deadline);
}
