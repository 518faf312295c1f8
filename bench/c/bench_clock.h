/* The two clocks of the C benchmarks that report nanoseconds: this thread's CPU time (the
 * machine is shared, and wall time under load measures the scheduler as much as the code)
 * and the monotonic wall clock, printed beside it. */
#ifndef BITSEC_BENCH_CLOCK_H
#define BITSEC_BENCH_CLOCK_H

#include <time.h>

static inline double bench_cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static inline double bench_wall_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

#endif
