"""The live controller on the event stream: the prediction lane and the Faust worker."""
