/* libFuzzer driver for API request bodies: JSON → Service validation →
 * revision build → what an instance start resolves from Secrets and
 * ConfigMaps; and Secret / ConfigMap validation. Validation must never
 * crash, and whatever it accepts must turn into a revision with runtime
 * settings. */
#include "configdata.h"
#include "service.h"

#include <errno.h>

/* Every Secret and ConfigMap holds two keys, one not UTF-8; "missing" is
 * none and "broken" cannot be read. */
static int lookup(void *ctx, sl_data_kind_t kind, const char *name, json_t **vals, sl_error_t *err)
{
    (void)ctx;
    (void)kind;
    *vals = NULL;
    if (!strcmp(name, "missing"))
        return -ENOENT;
    if (!strcmp(name, "broken"))
        return sl_error_set(err, EIO, "broken");
    *vals = json_pack("{s:s,s:s%}", "k", "v", "bin", "\0\xff", (size_t)2);
    return 0;
}

static void data_object(json_t *j)
{
    const char *kind = sl_json_str(j, "kind");
    sl_data_kind_t k = kind && !strcmp(kind, "ConfigMap") ? SL_DATA_CONFIGMAP : SL_DATA_SECRET;
    sl_error_t err = {0};
    if (sl_data_validate(k, j, "default", &err) == 0) {
        json_decref(sl_data_values(k, j));
        free(sl_data_keys(k, j, NULL));
        if (sl_data_check_update(k, j, j, &err) != 0)
            __builtin_trap();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *j = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (!j)
        return 0;
    sl_error_t err = {0};
    const char *kind = sl_json_str(j, "kind");
    if (kind && (!strcmp(kind, "Secret") || !strcmp(kind, "ConfigMap"))) {
        data_object(j);
    } else if (sl_service_validate(j, "default", &err) == 0) {
        json_t *rev = sl_revision_build(j, "x-00001", 1);
        sl_revision_cfg_t *cfg = NULL;
        if (sl_revision_cfg_from_json(rev, &cfg, &err) != 0)
            __builtin_trap();
        if (cfg->has_refs) {
            sl_revision_process_t p;
            sl_revision_resolve(cfg, lookup, NULL, &p, &err);
            sl_revision_process_free(&p);
        }
        sl_revision_cfg_free(cfg);
        json_decref(rev);
        free(sl_service_template_key(j));
    }
    json_decref(j);
    return 0;
}
