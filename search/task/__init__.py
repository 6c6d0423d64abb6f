"""The task: its data (digits, fashion-mnist, image folders, plug-ins), the model to compress,
its teacher and how models are trained."""
