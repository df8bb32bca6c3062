"""The dashboard at ``/dashboard``: pages rendered on the server for the people who run the gateway and its tenants.

Signed in with a tenant's API key or an operator key from policy (:mod:`.sessions`,
:mod:`.access`); pages (:mod:`.pages`) read the store as the API does and render the package's
templates (:mod:`.rendering`) with one same-origin stylesheet and no script.
"""
