"""Human review (`facedata review`): decisions recorded in the append-only `reviews` manifest
(`decisions`), applied by the cluster stage as constraints (`constraints`), the review order (`queue`) and the
local web app (`app`)."""
