/* `vsrbus cert`: writes a self-signed certificate and its key (PEM) for a QUIC listener and
 * prints the SHA-256 fingerprint clients pin with --pin. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "cmds.h"
#include "crypto/cert.h"
#include "vsrbus/vsrbus.h"

static void cert_usage(FILE *f) {
  fprintf(f, "usage: vsrbus cert --out DIR [--name NAME] [--days N]\n"
             "  writes DIR/cert.pem and DIR/key.pem (mode 0600): an ECDSA P-256 certificate,\n"
             "  self-signed, for NAME (default localhost) plus 127.0.0.1 and ::1, valid N days\n"
             "  (default 365); prints its SHA-256 fingerprint\n");
}

int vsr_cmd_cert(int argc, char **argv) {
  static const struct option longopts[] = {
      {"out", required_argument, 0, 'o'}, {"name", required_argument, 0, 'n'},
      {"days", required_argument, 0, 'd'}, {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0},
  };
  const char *out = NULL, *name = "localhost";
  long days = 365;
  int ch;
  optind = 1;
  while ((ch = getopt_long(argc, argv, "o:n:d:h", longopts, NULL)) != -1) {
    switch (ch) {
    case 'o': out = optarg; break;
    case 'n': name = optarg; break;
    case 'd': days = strtol(optarg, NULL, 10); break;
    case 'h': cert_usage(stdout); return 0;
    default: cert_usage(stderr); return 2;
    }
  }
  if (!out || !*name || days < 1 || days > 36500 || optind < argc) {
    cert_usage(stderr);
    return 2;
  }
  struct vsri_cert *c = NULL;
  int err = vsri_cert_generate(&c, name, (unsigned)days);
  if (!err) err = vsri_cert_write(c, out);
  if (err) {
    fprintf(stderr, "vsrbus cert: %s: %s\n", out, vsr_strerror(err));
    vsri_cert_free(c);
    return 1;
  }
  char fp[VSRI_FINGERPRINT_TEXT_LEN];
  vsri_fingerprint_format(c->sha256, fp);
  printf("wrote %s/cert.pem and %s/key.pem for %s, valid %ld days\nSHA-256 %s\n", out, out, name,
         days, fp);
  vsri_cert_free(c);
  return 0;
}
