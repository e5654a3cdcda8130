"""Pure figure builders: data in, plotly Figure (or HTML) out. Never imports streamlit."""
