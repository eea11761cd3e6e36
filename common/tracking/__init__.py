"""Tracker-generic pieces shared by the tracking bundles (siamrpn, siamrpnpp, sa_siam): region overlap, the VOT
supervised protocol and its A / R / EAO, OTB success / precision, dataset readers, crops, windows and anchors."""
