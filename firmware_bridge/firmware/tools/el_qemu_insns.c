/*
 * el_qemu_insns.c - a QEMU TCG plugin that counts the guest instructions executed, for
 * tests/qemu_helper.py (host C, built as a shared object with the host gcc):
 *
 *     gcc -shared -fPIC -O2 -o el_qemu_insns.so el_qemu_insns.c
 *     qemu-system-arm ... -plugin el_qemu_insns.so,out=insns.txt
 *
 * Every instruction QEMU translates gets a callback that runs before it executes, so the
 * count is of instructions executed (a faulting one included, the BKPT of the semihosting
 * exit too), with no sampling; tests/test_boards.py checks it on a hand-counted program
 * whose UART accesses sit in the middle of translation blocks, with and without icount.
 * At exit (semihosting SYS_EXIT_EXTENDED included) the count is written to `out` as one
 * decimal line. It counts instructions, not cycles: QEMU has no timing model. With
 * -icount shift=0 (one instruction = 1 ns of virtual time) timer interrupts come at the
 * same instruction on every run, so the count of a program that uses them repeats too.
 *
 * The declarations below are the few entry points of QEMU's plugin API (QEMU's docs,
 * "QEMU TCG Plugins") this plugin uses, with the types it needs: Debian's packages do not
 * install QEMU's qemu-plugin.h. Used with QEMU 7.2, plugin API version 1; later QEMUs keep
 * these entry points but may refuse version 1 (QEMU checks `qemu_plugin_version` when it
 * loads a plugin): build with -DEL_QEMU_PLUGIN_API=N, or set EL_QEMU_PLUGIN_API=N for
 * tests/qemu_helper.py.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#ifndef EL_QEMU_PLUGIN_API
#define EL_QEMU_PLUGIN_API 1
#endif

#define EXPORT __attribute__((visibility("default")))

typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t; /* only passed through */
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum { QEMU_PLUGIN_CB_NO_REGS = 0 };

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id,
                                           void (*callback)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb));
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t index);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn,
                                            void (*callback)(unsigned int vcpu, void *data), int flags,
                                            void *data);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, void (*callback)(qemu_plugin_id_t id, void *data),
                                    void *data);

EXPORT int qemu_plugin_version = EL_QEMU_PLUGIN_API;

static uint64_t executed; /* one vCPU on the Cortex-M boards: no other writer */
static char out_path[4096];

static void on_exec(unsigned int vcpu, void *data)
{
    (void)vcpu;
    (void)data;
    ++executed;
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t i, n = qemu_plugin_tb_n_insns(tb);
    (void)id;
    for (i = 0; i < n; ++i) {
        qemu_plugin_register_vcpu_insn_exec_cb(qemu_plugin_tb_get_insn(tb, i), on_exec, QEMU_PLUGIN_CB_NO_REGS, NULL);
    }
}

static void write_count(qemu_plugin_id_t id, void *data)
{
    FILE *out;
    (void)id;
    (void)data;
    out = fopen(out_path, "w");
    if (out == NULL) {
        perror(out_path);
        return;
    }
    fprintf(out, "%llu\n", (unsigned long long)executed);
    fclose(out);
}

EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv);

EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    int i;
    (void)info;
    for (i = 0; i < argc; ++i) {
        if (strncmp(argv[i], "out=", 4) == 0 && strlen(argv[i] + 4) < sizeof out_path) {
            strcpy(out_path, argv[i] + 4);
        }
    }
    if (out_path[0] == '\0') {
        fprintf(stderr, "el_qemu_insns: give the count's file, -plugin el_qemu_insns.so,out=PATH\n");
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, write_count, NULL);
    return 0;
}
