/* guard.h - surviving a mapped file that shrinks underneath.
 *
 * Reading a page of a memory-mapped file that has been truncated raises
 * SIGBUS. dora_guard_install sets a handler that, inside a guarded region of
 * the faulting thread, records the address and jumps back to the region's
 * start (sigsetjmp/siglongjmp, per thread), so the caller can name the file
 * and go on with the rest; outside a guarded region the signal keeps its
 * default action. A region:
 *
 *     sigjmp_buf env;
 *     if (sigsetjmp(env, 1) == 0) {
 *         dora_guard_enter(&env);
 *         ... read the mappings ...
 *         dora_guard_leave();
 *     } else {
 *         dora_guard_leave();
 *         ... dora_guard_fault() is the faulting address ...
 *     }
 *
 * Code inside a region must hold no lock and own no allocation that a jump
 * would leak: it only reads the mappings into buffers owned by the caller.
 */
#ifndef DORA_GUARD_H
#define DORA_GUARD_H

#include <setjmp.h>
#include <stddef.h>

/* Install the SIGBUS handler (idempotent, thread-safe). Returns 0 or -1. */
int dora_guard_install(void);
void dora_guard_enter(sigjmp_buf *env);
void dora_guard_leave(void);
/* The address of the last fault caught on this thread. */
const void *dora_guard_fault(void);

/* Run FN(CTX) in a guarded region of this thread (installing the handler if
 * needed). FN follows the rules above: it only reads mappings into memory
 * its caller owns. Regions nest: the enclosing one (if any) is guarded again
 * afterwards. Returns 0 when FN returned, 1 when a read faulted (*fault, if
 * not NULL, gets the address; FN was cut short), -1 when the handler cannot
 * be installed (FN was not run). */
int dora_guard_run(void (*fn)(void *ctx), void *ctx, const void **fault);

/* memcpy(DST, SRC, N) in a guarded region: 0, 1 if reading SRC faulted, -1
 * if the handler cannot be installed (*fault as for dora_guard_run). */
int dora_guard_copy(void *dst, const void *src, size_t n, const void **fault);

/* memcmp(A, B, N) != 0 in a guarded region: 0 if equal, 1 if they differ, -1
 * if reading faulted or the handler cannot be installed (*fault as above,
 * NULL for the latter). */
int dora_guard_differ(const void *a, const void *b, size_t n, const void **fault);

#endif
