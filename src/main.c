/*
 * main.c — the `sluice` binary: one table of subcommands, each in its own
 * cmd_*.c. `sluice serve` runs the daemon; every other command talks to it
 * over the API socket.
 */
#include "cli.h"

#include <signal.h>
#include <stdio.h>

static int cmd_help(int argc, char **argv);

static const sl_cmd_t commands[] = {
    {"serve", sl_cmd_serve, "run the daemon: router, API, supervisor, store"},
    {"deploy", sl_cmd_deploy, "create or update a service from an image and wait until Ready"},
    {"apply", sl_cmd_apply, "create or update services from Knative YAML/JSON manifests"},
    {"services", sl_cmd_services, "list services"},
    {"describe", sl_cmd_describe, "show one service with its revisions and instances"},
    {"delete", sl_cmd_delete, "delete a service, its revisions and instances"},
    {"revisions", sl_cmd_revisions, "list revisions; `revisions delete REV` removes one"},
    {"traffic", sl_cmd_traffic, "split traffic across revisions by percent; tag revisions"},
    {"instances", sl_cmd_instances, "list running instances"},
    {"images", sl_cmd_images, "list images; `images import REF` imports one"},
    {"secrets", sl_cmd_secrets, "list, create or delete Secrets"},
    {"configmaps", sl_cmd_configmaps, "list, create or delete ConfigMaps"},
    {"runtimeclasses", sl_cmd_runtimeclasses, "list runtime classes and whether they can run here"},
    {"logs", sl_cmd_logs, "print a service's logs (-f to follow)"},
    {"usage", sl_cmd_usage, "billable usage and cost under Cloud Run, instance, Lambda, Fargate"},
    {"debug", sl_cmd_debug, "attach an ephemeral debug container to a running instance"},
    {"doctor", sl_cmd_doctor, "check that this host can run sluice"},
    {"version", sl_cmd_version, "print the version"},
    {"help", cmd_help, "show help for a command"},
};

static void usage(FILE *f)
{
    fprintf(f, "sluice — serverless containers on your own machine\n\n"
               "Usage: sluice COMMAND [OPTIONS]\n\nCommands:\n");
    for (size_t i = 0; i < SL_ARRAY_LEN(commands); i++)
        fprintf(f, "  %-15s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nCommon options: --state-dir DIR (or SLUICE_STATE_DIR; default "
               "/var/lib/sluice), -n NAMESPACE, -o json|yaml\n"
               "A TCP API (serve --api-listen) is reached with SLUICE_SERVER=http://HOST:PORT\n"
               "and SLUICE_TOKEN or SLUICE_TOKEN_FILE.\n"
               "Run `sluice COMMAND --help` for a command's options.\n");
}

static const sl_cmd_t *find(const char *name)
{
    for (size_t i = 0; i < SL_ARRAY_LEN(commands); i++)
        if (!strcmp(commands[i].name, name))
            return &commands[i];
    return NULL;
}

static int cmd_help(int argc, char **argv)
{
    if (argc < 2) {
        usage(stdout);
        return 0;
    }
    const sl_cmd_t *c = find(argv[1]);
    if (!c)
        return sl_cli_usage("unknown command '%s'; see `sluice --help`", argv[1]);
    char *args[] = {argv[1], "--help", NULL};
    return c->fn(2, args);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version"))
        return sl_cmd_version(1, argv + 1);
    const sl_cmd_t *c = find(argv[1]);
    if (!c)
        return sl_cli_usage("unknown command '%s'; see `sluice --help`", argv[1]);
    return c->fn(argc - 1, argv + 1);
}
