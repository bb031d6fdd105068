// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* mark: set one DSCP on every packet in the module's interest. The simplest real module. */
#include <itm/itm.h>

/* parameter --dscp, set by itmctl before load */
const volatile __u8 dscp = 0;

static __always_inline int mark_process(struct itm_ctx *c, __u32 cls)
{
	return itm_set_dscp(c, dscp);
}

ITM_MODULE(mark, itm_classify_all, itm_log_none, mark_process)
