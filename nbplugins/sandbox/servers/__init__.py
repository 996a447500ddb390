"""The sandbox's servers, started as processes: real ones (rclone, oidc-provider-mock, PyWPS,
pygeoapi) through thin starters and fronts, and contract-faithful ones (Onedata, OSCAR, Keystone)
where the real service cannot run here. :mod:`.common` holds what the WPS and OGC API - Processes
servers share; :mod:`.faultproxy` is the counting proxy the OSCAR server puts in front of its S3."""
