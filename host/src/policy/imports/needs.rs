//! `needs`: what a policy declares it reads, during `init`.

use super::Host;
use crate::policy::Reads;
use crate::policy::bindings::v2::wasm_router::policy::needs;

impl needs::Host for Host {
    fn declare(&mut self, reads: needs::Reads) {
        if !self.initialised {
            self.declared = Some(Reads {
                headers: reads.contains(needs::Reads::HEADERS),
                kv_matches: reads.contains(needs::Reads::KV_MATCHES),
                declared: true,
            });
        }
    }
}

impl Host {
    /// What the instance declared during `init` (`None`: it did not), and
    /// from now on ignore declarations: `init` has returned.
    pub(in crate::policy) fn end_init(&mut self) -> Option<Reads> {
        self.initialised = true;
        self.declared
    }
}
