"""Request bodies: reading and validating what a client sends, before any stream
starts, into plain values, with a 400 naming the field otherwise. The WSGI
middleware that bounds body reads in time (:mod:`.bounded`), JSON within bounds
(:mod:`.json_body`), chat requests from a JSON body or a query (:mod:`.chat`) and
Responses API bodies (:mod:`.responses`). Pure but for the middleware; it may
import only the foundation and the backends' values (docs/architecture.md,
"Parts and their arrows")."""
