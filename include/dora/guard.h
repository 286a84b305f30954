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

/* Install the SIGBUS handler (idempotent, thread-safe). Returns 0 or -1. */
int dora_guard_install(void);
void dora_guard_enter(sigjmp_buf *env);
void dora_guard_leave(void);
/* The address of the last fault caught on this thread. */
const void *dora_guard_fault(void);

#endif
