"""Test and demo infrastructure, not part of the product: lab hosts (libvirt hosts in network
namespaces on this machine, ``hosts``), the testbed the test suite and benches share
(``testbed``), and the demo (``demo``). ``python -m localvmss.lab`` runs the lab's own commands
(up, down, gc)."""
