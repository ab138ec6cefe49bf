/* Replica plane: placeholder until the authenticated replica links land (issue 5).
 * A bus configured with a cluster refuses to start rather than run without its replicas. */
#include "bus/bus_impl.h"
#include "util/log.h"

int vsri_replica_init(struct vsr_bus *bus) {
  VSRI_ERROR("VSR-CONFIG", "cluster '%s': the replica plane is not available in this build",
             bus->opts.cluster_name);
  return VSR_EUNSUPPORTED;
}

void vsri_replica_fini(struct vsr_bus *bus) { (void)bus; }
void vsri_replica_shutdown(struct vsr_bus *bus) { (void)bus; }
void vsri_replica_on_handshake_frame(struct bus_peer *p, struct vsr_msg *msg) {
  (void)msg;
  vsri_bus_peer_close(p, VSR_EUNSUPPORTED, false);
}
void vsri_replica_on_closed(struct bus_peer *p, int reason) {
  (void)p;
  (void)reason;
}
void vsri_replica_on_connected(struct bus_peer *p, int status) {
  (void)p;
  (void)status;
}
