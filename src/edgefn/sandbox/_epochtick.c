/* Deadlines for wasmtime guests with no periodic tick: one thread per engine that
   sleeps until the earliest deadline of the calls under way, and advances the
   engine's epoch only when one has passed.

   Each store has a slot, the `data` of its epoch deadline callback
   (`edgefn_deadline_callback`). A call writes its deadline into its slot
   (`edgefn_slot_arm`) and clears it when it ends (`edgefn_slot_end`). Every store's
   epoch deadline is one epoch ahead, so a running guest reaches it at its next
   epoch check after any advance and the callback runs: it ends the call with an
   error if the slot's deadline has passed, else moves the store's deadline one
   epoch on. Deadlines are wall-clock time (CLOCK_MONOTONIC, as Python's
   time.monotonic): never early, late by as long as the thread takes to wake.

   Why not a periodic tick: a 1 ms tick wakes a thread a thousand times a second
   for as long as any deadline is pending, which includes every request waiting
   in `http_fetch`. On a virtual machine each wake costs tens of microseconds;
   here the thread wakes about once per deadline length, and never while idle.

   Plain C with no Python API: loaded with ctypes. The thread's lock guards the
   slot list; a slot's deadline is an atomic written by the calling thread. */

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#define NOTHING INT64_MAX /* `target` when no deadline is pending */

typedef void (*increment_fn)(void *engine);
typedef void *(*error_new_fn)(const char *message);

struct edgefn_slot;

struct edgefn_ticker {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t thread;
    int running;  /* the thread was started and not joined */
    int stopping;
    long refs;    /* the owner's and one per slot: the last to go frees the ticker */
    increment_fn increment;
    void *engine;
    error_new_fn error_new;
    /* When the thread wakes next; 0 while it is looking at the slots (a call armed
       meanwhile wakes it whatever its deadline). Written under the lock, read by
       `edgefn_slot_arm` without it. */
    _Atomic int64_t target;
    struct edgefn_slot *slots; /* a doubly-linked list */
    unsigned long wakes;       /* times the thread looked at the slots (for tests) */
    unsigned long advances;    /* epochs it advanced */
};

struct edgefn_slot {
    _Atomic int64_t deadline; /* ns of CLOCK_MONOTONIC; 0: no call under way */
    _Atomic int expired;      /* the callback ended the call */
    int64_t advanced_for;     /* the deadline the thread last advanced the epoch for */
    struct edgefn_ticker *ticker;
    struct edgefn_slot *prev, *next;
};

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void release(struct edgefn_ticker *t)
{
    /* Called with the lock held; unlocks it. */
    int last = --t->refs == 0;

    pthread_mutex_unlock(&t->lock);
    if (last) {
        pthread_cond_destroy(&t->wake);
        pthread_mutex_destroy(&t->lock);
        free(t);
    }
}

static void *run(void *p)
{
    struct edgefn_ticker *t = p;
    struct edgefn_slot *s;
    struct timespec until;
    int64_t now, d, earliest;
    int advance;

    pthread_mutex_lock(&t->lock);
    while (!t->stopping) {
        atomic_store(&t->target, 0);
        t->wakes++;
        now = now_ns();
        earliest = NOTHING;
        advance = 0;
        for (s = t->slots; s != NULL; s = s->next) {
            d = atomic_load(&s->deadline);
            if (d == 0)
                continue;
            if (d <= now) {
                if (s->advanced_for != d) {
                    s->advanced_for = d;
                    advance = 1;
                }
            } else if (d < earliest) {
                earliest = d;
            }
        }
        if (advance) {
            t->increment(t->engine);
            t->advances++;
        }
        atomic_store(&t->target, earliest);
        if (earliest == NOTHING) {
            pthread_cond_wait(&t->wake, &t->lock);
        } else {
            until.tv_sec = earliest / 1000000000;
            until.tv_nsec = earliest % 1000000000;
            pthread_cond_timedwait(&t->wake, &t->lock, &until);
        }
    }
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

/* A new lock and condition variable (the wait's deadline on CLOCK_MONOTONIC). */
static void init_sync(struct edgefn_ticker *t)
{
    pthread_condattr_t cattr;

    pthread_mutex_init(&t->lock, NULL);
    pthread_condattr_init(&cattr);
    pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
    pthread_cond_init(&t->wake, &cattr);
    pthread_condattr_destroy(&cattr);
}

static int start(struct edgefn_ticker *t)
{
    pthread_attr_t attr;
    int err;

    atomic_store(&t->target, 0);
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024); /* it calls one small function */
    err = pthread_create(&t->thread, &attr, run, t);
    pthread_attr_destroy(&attr);
    t->running = err == 0;
    return err;
}

/* A ticker for `engine`, its thread started; NULL with errno set on failure.
   `increment` is wasmtime_engine_increment_epoch, `error_new` wasmtime_error_new. */
struct edgefn_ticker *edgefn_ticker_create(increment_fn increment, void *engine,
                                           error_new_fn error_new)
{
    struct edgefn_ticker *t;
    int err;

    if (increment == NULL || error_new == NULL) {
        errno = EINVAL;
        return NULL;
    }
    t = calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    t->increment = increment;
    t->engine = engine;
    t->error_new = error_new;
    t->refs = 1;
    init_sync(t);
    err = start(t);
    if (err != 0) {
        pthread_cond_destroy(&t->wake);
        pthread_mutex_destroy(&t->lock);
        free(t);
        errno = err;
        return NULL;
    }
    return t;
}

/* Stop and join the thread: no epoch is advanced once this returns. The ticker is
   freed with its last slot. */
void edgefn_ticker_delete(struct edgefn_ticker *t)
{
    int running;

    pthread_mutex_lock(&t->lock);
    t->stopping = 1;
    running = t->running;
    t->running = 0;
    pthread_cond_signal(&t->wake);
    pthread_mutex_unlock(&t->lock);
    if (running)
        pthread_join(t->thread, NULL);
    pthread_mutex_lock(&t->lock);
    release(t);
}

/* Before a fork: the list must not be changing while the child's copy is made. */
void edgefn_ticker_prefork(struct edgefn_ticker *t) { pthread_mutex_lock(&t->lock); }

void edgefn_ticker_postfork_parent(struct edgefn_ticker *t) { pthread_mutex_unlock(&t->lock); }

/* In a forked child: the thread is not there. A new lock and a new thread, for the
   same slots (the stores the child inherited). Returns 0 or an errno. */
int edgefn_ticker_postfork_child(struct edgefn_ticker *t)
{
    init_sync(t);
    return t->stopping ? 0 : start(t);
}

/* What the thread has done: out[0] its wakes (times it looked at the slots), out[1]
   the epochs it advanced. */
void edgefn_ticker_counts(struct edgefn_ticker *t, unsigned long out[2])
{
    pthread_mutex_lock(&t->lock);
    out[0] = t->wakes;
    out[1] = t->advances;
    pthread_mutex_unlock(&t->lock);
}

/* A slot for one store, listed; NULL when out of memory. */
struct edgefn_slot *edgefn_slot_new(struct edgefn_ticker *t)
{
    struct edgefn_slot *s = calloc(1, sizeof *s);

    if (s == NULL)
        return NULL;
    s->ticker = t;
    pthread_mutex_lock(&t->lock);
    t->refs++;
    s->next = t->slots;
    if (t->slots != NULL)
        t->slots->prev = s;
    t->slots = s;
    pthread_mutex_unlock(&t->lock);
    return s;
}

/* The store's finalizer: unlist and free the slot. */
void edgefn_slot_free(void *p)
{
    struct edgefn_slot *s = p;
    struct edgefn_ticker *t = s->ticker;

    pthread_mutex_lock(&t->lock);
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        t->slots = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    free(s);
    release(t);
}

/* A call starts: its deadline is `ms` milliseconds from now. The thread is woken only
   when it would sleep past this deadline. */
void edgefn_slot_arm(struct edgefn_slot *s, int64_t ms)
{
    struct edgefn_ticker *t = s->ticker;
    int64_t d = now_ns() + ms * 1000000, target;

    atomic_store(&s->expired, 0);
    atomic_store(&s->deadline, d);
    target = atomic_load(&t->target);
    if (target == 0 || d < target) {
        pthread_mutex_lock(&t->lock);
        pthread_cond_signal(&t->wake);
        pthread_mutex_unlock(&t->lock);
    }
}

/* The call ended: nothing to wake for. */
void edgefn_slot_end(struct edgefn_slot *s) { atomic_store(&s->deadline, 0); }

/* Whether the callback ended the slot's last call at its deadline. */
int edgefn_slot_expired(struct edgefn_slot *s) { return atomic_load(&s->expired); }

/* wasmtime's epoch deadline callback: on the guest's thread, inside its call. */
void *edgefn_deadline_callback(void *context, void *data, uint64_t *delta, uint8_t *kind)
{
    struct edgefn_slot *s = data;
    int64_t d = atomic_load(&s->deadline);

    (void)context;
    if (d != 0 && now_ns() >= d) {
        atomic_store(&s->expired, 1);
        return s->ticker->error_new("deadline reached");
    }
    *delta = 1;
    *kind = 0; /* WASMTIME_UPDATE_DEADLINE_CONTINUE */
    return NULL;
}
