/* noop-c is the smallest auditproc plugin in C: it passes every event on
 * unchanged. Benchmarks use it to measure the cost of a C guest call. */
#define AUDITPROC_MAIN
#include "auditproc.h"

int auditproc_on_event(const struct auditproc_input *in) {
	(void)in;
	return AUDITPROC_OK;
}
