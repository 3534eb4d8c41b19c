"""How a plan's resources read, for whoever reads them: the policy pack (policies/) and the toolkit's cost
estimate (servestack/cost.py). Values as a preview gives them (`values`: unknowns, wire names), one resource
(`resources`), node pools (`pools`) and cloud load balancers (`load_balancers`)."""
