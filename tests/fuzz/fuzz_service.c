/* libFuzzer driver for API request bodies: JSON → Service validation →
 * revision build. Validation must never crash, and whatever it accepts must
 * turn into a revision with runtime settings. */
#include "service.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *j = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (!j)
        return 0;
    sl_error_t err = {0};
    if (sl_service_validate(j, "default", &err) == 0) {
        json_t *rev = sl_revision_build(j, "x-00001", 1);
        sl_revision_cfg_t *cfg = NULL;
        if (sl_revision_cfg_from_json(rev, &cfg, &err) != 0)
            __builtin_trap();
        sl_revision_cfg_free(cfg);
        json_decref(rev);
        free(sl_service_template_key(j));
    }
    json_decref(j);
    return 0;
}
